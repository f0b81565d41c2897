"""warmbench command line: `python run.py --help`. Thin on purpose; see harness/cli.py."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
