"""The full profile, rehearsed (``make rehearsal``): every notebook through the full profile's code paths on a tiny
fake data root with random weights in every real on-disk format, then checks that each notebook, report section
and model ran, with every loaded model on ``FROZENSEG_DEVICE``.

    python -m frozenseg.rehearsal [--device cpu|cuda] [--out DIR] [--no-large-sam]
"""
from .root import LLM_MODEL, FakeRoot, build  # noqa: F401
from .run import main, rehearse  # noqa: F401
