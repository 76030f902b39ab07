"""`ray job submit -- python jobs/sweep.py --config configs/sweep.yaml [key=value ...]`: the ablation sweep on Tune."""
import sys

from raypdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
