"""``python -m nrc_utils.sweep GRID.yaml [--workers N] [--scheduler ADDRESS | --cluster CLUSTER.yaml] [--out DIR]``."""

import sys

from nrc_utils.sweep import main

if __name__ == "__main__":
    sys.exit(main())
