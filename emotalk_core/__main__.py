"""`python -m emotalk_core ...` is the `emotalk` command."""

import sys

from .cli import main

sys.exit(main())
