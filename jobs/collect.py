"""`ray job submit -- python jobs/collect.py --config configs/zoo.yaml [key=value ...]`: build the checkpoint zoo."""
import sys

from raypdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["collect", *sys.argv[1:]]))
