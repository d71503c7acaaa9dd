"""``python -m frozenseg.manifest status | fetch [KEY ...]``."""
import sys

from .cli import main

sys.exit(main())
