"""`ray job submit -- python jobs/pipeline.py --config configs/zoo.yaml [key=value ...]`: collect → train → generate → evaluate."""
import sys

from raypdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
