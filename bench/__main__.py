"""``python -m bench`` (``make bench``): the generation benchmark; see bench/generation.py."""

import sys

from bench.generation import main

sys.exit(main())
