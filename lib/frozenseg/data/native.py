"""A case's ground-truth mask at its file's own (native) size, for scoring.

Real 2D images and masks are shrunk at load (``Profile.real_max_side``) so that encoders and skills work on a
bounded size; scores, though, belong to the dataset's own pixels. :func:`native_mask` reads a case's mask files
again at full size (display orientation, the same mask rule and the same union of several mask files as at load)
and keeps the result in a small disk cache (``<cache_root>/native_masks``, bit-packed, keyed by the mask files'
contents and this module's code), so that each mask is decoded once however many methods are scored on it. A case
that was not shrunk (phantoms, volumes' slices, files already small enough) is its own native mask.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import struct
import zlib
from pathlib import Path

import numpy as np

from .. import paths
from ..errors import DataError
from ..io import atomic_path
from .files import _mask_pixels, _resize_mask
from .types import Case

log = logging.getLogger(__name__)
MAGIC = b"FSNAT1\0\0"
HEADER = struct.Struct("<8sIII")          # magic, rows, cols, adler32 of the packed bits
_CODE = hashlib.sha256(Path(__file__).read_bytes() + (Path(__file__).with_name("files.py")).read_bytes()
                       ).hexdigest()[:16]
_MEMORY: collections.OrderedDict = collections.OrderedDict()   # key -> (shape, packed bits): the last few masks
_MEMORY_ENTRIES = 32


def native_size(case: Case) -> tuple[int, int]:
    """(rows, cols) of the case's mask file(s) in display orientation; the loaded mask's size when not shrunk."""
    size = case.meta.get("orig_size")
    return tuple(int(v) for v in size) if size else tuple(case.mask.shape)


def is_shrunk(case: Case) -> bool:
    """True when the case was loaded smaller than its files and its mask files are known."""
    return bool(case.meta.get("mask_paths")) and native_size(case) != tuple(case.mask.shape)


def native_mask(case: Case, cache_root: str | Path | None = None) -> np.ndarray:
    """The case's ground truth at native size: every mask file read at full size, resized (nearest) to the image's
    full size where a file differs, and united, exactly as at load but without shrinking."""
    if not is_shrunk(case):
        return case.mask
    files = [Path(p) for p in case.meta["mask_paths"]]
    size = native_size(case)
    key = _key(files, size)
    if key in _MEMORY:
        _MEMORY.move_to_end(key)
        shape, bits = _MEMORY[key]
        return np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
    root = Path(cache_root) if cache_root is not None else paths.cache_root() / "native_masks"
    path = root / key[:2] / f"{key}.nat"
    mask = _load(path)
    if mask is None:
        mask = np.zeros(size, bool)
        for f in files:
            m, _ = _mask_pixels(f)
            mask |= _resize_mask(m, size)
        _save(path, mask)
    if mask.shape != size:
        raise DataError(files[0], f"native mask is {mask.shape}, the case's full size is {size}",
                        "clear the cache (make clean-cache) and rerun")
    _remember(key, mask)
    return mask


def _key(files: list[Path], size: tuple[int, int]) -> str:
    """Cache key: the mask files' contents and suffixes, the full size and this code's version."""
    h = hashlib.sha256(f"native|{_CODE}|{size}|".encode())
    for f in files:
        try:
            h.update(f"{f.suffix.lower()}|".encode() + hashlib.sha256(f.read_bytes()).digest())
        except OSError as exc:
            raise DataError(f, f"mask file unreadable at scoring time ({exc})",
                            "restore the dataset folder the case was loaded from") from exc
    return h.hexdigest()


def _remember(key: str, mask: np.ndarray) -> None:
    _MEMORY[key] = (mask.shape, np.packbits(mask.reshape(-1)))
    while len(_MEMORY) > _MEMORY_ENTRIES:
        _MEMORY.popitem(last=False)


def _load(path: Path) -> np.ndarray | None:
    """A cached native mask, or None (missing; an unreadable entry is removed)."""
    if not path.is_file():
        return None
    try:
        buf = path.read_bytes()
        magic, rows, cols, check = HEADER.unpack(buf[:HEADER.size])
        bits = np.frombuffer(buf[HEADER.size:], np.uint8)
        if magic != MAGIC or bits.size != -(-rows * cols // 8) or zlib.adler32(bits.tobytes()) != check:
            raise ValueError("bad header, size or checksum")
        return np.unpackbits(bits, count=rows * cols).reshape(rows, cols).astype(bool)
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is a miss
        log.warning("native-mask cache entry %s is unreadable (%s); reading the mask files again", path, exc)
        path.unlink(missing_ok=True)
        return None


def _save(path: Path, mask: np.ndarray) -> None:
    """Write one entry atomically; a failed write only logs a warning."""
    bits = np.packbits(mask.reshape(-1)).tobytes()
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(HEADER.pack(MAGIC, *mask.shape, zlib.adler32(bits)) + bits)
    except OSError as exc:
        log.warning("cannot write native-mask cache entry %s (%s); continuing without it", path, exc)
