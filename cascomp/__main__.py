"""`python -m cascomp`: the same command as the `cascomp` console script."""

import sys

from cascomp.cli import main

if __name__ == "__main__":
    sys.exit(main())
