"""`python -m jicm`, the same as the `jicm` console script."""

import sys

from jicm.cli import main

sys.exit(main())
