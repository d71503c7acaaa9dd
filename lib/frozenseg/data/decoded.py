"""Disk cache of decoded (and shrunk) real 2D cases, keyed by file contents, shrink size and decoding code.

Decoding a dataset's JPEG/PNG files and shrinking them to ``max_side`` is repeated by every notebook kernel;
:class:`DecodedCache` stores the result once as ``<cache_root>/decoded/<hh>/<key>.dec``, written atomically: a
fixed header (sizes, EXIF orientation, adler32 of the payload), the raw uint8 image, then the bit-packed mask
(one flat read per entry, several times faster than an ``.npz`` with its zip members and per-array headers).
The key is the sha256 of the image file's bytes and of each mask file's bytes (with their suffixes, which
select the mask rule), ``max_side``, the source code of the decoding modules and the Pillow / libjpeg
versions, so a changed file or a changed decode rule is never served stale. An entry that does not read back
(truncated, bad checksum, not an entry) is deleted and decoded again. A hit is bit-identical to a fresh decode.
"""
from __future__ import annotations

import hashlib
import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import paths
from ..manifest import sha256_file
from ..io import atomic_path
from .types import Pair

log = logging.getLogger(__name__)
_SOURCES = ("files.py", "loaders.py", "decoded.py")   # the decode rules and this storage format
MAGIC = b"FSDEC1\0\0"
HEADER = struct.Struct("<8sIIIIBBxxI")    # magic, rows, cols, orig rows, orig cols, orientation, fg, adler32


@dataclass(frozen=True)
class Decoded:
    """One decoded 2D case: display-oriented image and united mask, shrunk to ``max_side`` where asked."""

    image: np.ndarray                 # (H, W, 3) uint8
    mask: np.ndarray                  # (H, W) bool
    orig_size: tuple[int, int]        # (rows, cols) at full size, in display orientation
    orientation: int = 1              # the image file's EXIF orientation (1: none)
    mask_before_shrink: bool = False  # any foreground before shrinking (a tiny mask can vanish)


def _source_version() -> str:
    """Hash of the decoding modules' source and the Pillow / libjpeg versions."""
    import PIL
    from PIL import features

    h = hashlib.sha256(f"pillow {PIL.__version__}|jpeg {features.version('jpg')}|".encode())
    for name in _SOURCES:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


_VERSION = _source_version()   # at import, so it describes the code that runs even if the files change later


def code_version() -> str:
    """Version of the decoding code in the cache key (changes whenever files.py, loaders.py or decoded.py does)."""
    return _VERSION


class DecodedCache:
    """Decoded cases stored as ``<root>/<hh>/<key>.dec``; shared by every notebook, loader and profile."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else paths.cache_root() / "decoded"
        self.hits = self.misses = 0

    def key(self, pair: Pair, max_side: int | None) -> str:
        """Cache key of ``pair`` decoded at ``max_side``: file contents, suffixes, size and code version."""
        h = hashlib.sha256(f"decoded|{code_version()}|max_side={max_side}|".encode())
        for role, path in [("image", pair.image)] + [("mask", m) for m in pair.masks]:
            h.update(f"{role}|{Path(path).suffix.lower()}|{sha256_file(path)}|".encode())
        return h.hexdigest()

    def path(self, key: str) -> Path:
        """Where the entry of ``key`` lives."""
        return self.root / key[:2] / f"{key}.dec"

    def load(self, path: Path) -> Decoded | None:
        """Read one entry; a missing entry is None, an unreadable one is removed and is None too."""
        if not path.is_file():
            return None
        try:
            buf = np.fromfile(path, dtype=np.uint8)
            if buf.size < HEADER.size:
                raise ValueError(f"{buf.size} bytes, shorter than the header")
            magic, rows, cols, orig_r, orig_c, orientation, fg, check = HEADER.unpack(buf[:HEADER.size].tobytes())
            n_img, n_bits = rows * cols * 3, -(-rows * cols // 8)
            if magic != MAGIC or buf.size != HEADER.size + n_img + n_bits:
                raise ValueError(f"bad magic {magic!r} or size {buf.size} for a {rows}x{cols} entry")
            payload = buf[HEADER.size:]
            if zlib.adler32(payload) != check:
                raise ValueError("checksum mismatch")
            image = payload[:n_img].reshape(rows, cols, 3)
            mask = np.unpackbits(payload[n_img:], count=rows * cols).reshape(rows, cols).astype(bool)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a miss
            log.warning("decoded-image cache entry %s is unreadable (%s); decoding again", path, exc)
            path.unlink(missing_ok=True)
            return None
        return Decoded(image=image, mask=mask, orig_size=(orig_r, orig_c), orientation=orientation,
                       mask_before_shrink=bool(fg))

    def save(self, path: Path, dec: Decoded) -> None:
        """Write one entry atomically (temp file, fsync, rename); a failed write only logs a warning."""
        image = np.ascontiguousarray(dec.image, np.uint8)
        rows, cols = dec.mask.shape
        if image.shape != (rows, cols, 3):
            raise ValueError(f"image {image.shape} and mask {dec.mask.shape} of a decoded case disagree")
        payload = image.tobytes() + np.packbits(dec.mask.reshape(-1)).tobytes()
        header = HEADER.pack(MAGIC, rows, cols, *dec.orig_size, dec.orientation, bool(dec.mask_before_shrink),
                             zlib.adler32(payload))
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    fh.write(header)
                    fh.write(payload)
        except OSError as exc:
            log.warning("cannot write decoded-image cache entry %s (%s); continuing without it", path, exc)

    def get(self, pair: Pair, max_side: int | None, decode: Callable[[Pair, int | None], Decoded]) -> Decoded:
        """``decode(pair, max_side)``: from disk if decoded before, else decoded once and stored."""
        try:
            key = self.key(pair, max_side)
        except OSError:
            return decode(pair, max_side)   # a missing or unreadable file: decode() raises the DataError
        path = self.path(key)
        dec = self.load(path)
        if dec is not None:
            self.hits += 1
            return dec
        self.misses += 1
        dec = decode(pair, max_side)
        self.save(path, dec)
        return dec
