"""frozenseg: frozen SAM-family segmentation study companion (data, models, cache, metrics, runner, report)."""
from __future__ import annotations

__version__ = "0.1.0"
