"""``python -m frozenseg.rehearsal [--device cuda] [--out DIR]``."""
import sys

from .run import main

sys.exit(main())
