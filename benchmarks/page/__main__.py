"""`python -m benchmarks.page [--check | --write]`: BENCHMARKS.md's generated tables (`benchmarks.page.tables`)."""

import sys

from benchmarks.page.tables import main

if __name__ == "__main__":
    sys.exit(main())
