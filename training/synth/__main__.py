"""`python -m training.synth`: see training.synth.corpus."""

import sys

from .corpus import main

sys.exit(main())
