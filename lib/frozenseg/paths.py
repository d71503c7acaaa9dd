"""Every path the project uses, anchored at the repository root (never the working directory)."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
MANIFEST = REPO / "data_manifest.yaml"
REPORT_SRC = REPO / "report"


def data_root() -> Path:
    """Folder that holds real datasets and weights (``FROZENSEG_DATA``, default ``<repo>/data``)."""
    return Path(os.environ.get("FROZENSEG_DATA", REPO / "data")).expanduser().resolve()


def cache_root() -> Path:
    """Embedding cache folder (``FROZENSEG_CACHE``, default ``<repo>/.cache/frozenseg``)."""
    return Path(os.environ.get("FROZENSEG_CACHE", REPO / ".cache" / "frozenseg")).expanduser().resolve()


def out_root() -> Path:
    """Root of generated outputs (``FROZENSEG_OUT``, default the repository root)."""
    return Path(os.environ.get("FROZENSEG_OUT", REPO)).expanduser().resolve()


def results_dir(profile: str) -> Path:
    """Tidy results files of one profile: ``results/<profile>/``."""
    return out_root() / "results" / profile


def build_dir(profile: str) -> Path:
    """Built report of one profile: ``report/build/<profile>/`` (figures, tables, notebooks, index.html)."""
    return out_root() / "report" / "build" / profile
