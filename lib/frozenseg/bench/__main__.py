"""``python -m frozenseg.bench``: run the benchmarks (see frozenseg.bench)."""
from . import main

main()
