"""The data manifest: where each real dataset and weight file comes from, where it lives, how to check it.

``data_manifest.yaml`` declares every entry (url, licence, sha256, format, target, layout, how_to_get).
Paths are relative to the data root (``FROZENSEG_DATA``, see :func:`frozenseg.paths.data_root`).

CLI (used by ``make data``)::

    python -m frozenseg.manifest status            # what is present
    python -m frozenseg.manifest fetch [KEY ...]   # download, verify, extract (default entries if no KEY)
"""
from __future__ import annotations

from .cli import main  # noqa: F401
from .entries import (EFFECTS, FORMATS, KINDS, LABELS, Entry, Part, bundled_path, get_entry, layout_missing,  # noqa: F401
                      load_manifest, locate, missing_error, require, sha256_file, status, target_path, verify)
from .fetching import CHUNK, TIMEOUT_S, FetchError, download, extract, fetch  # noqa: F401
