"""`python -m ganflow ...`: the same as the `ganflow` command."""

import sys

from ganflow.cli import main

sys.exit(main())
