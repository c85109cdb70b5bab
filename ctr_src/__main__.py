"""``python -m ctr_src train ...`` / ``python -m ctr_src evaluate ...``: see :mod:`ctr_src.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
