"""On-disk cache of generated phantom domains, keyed by the generator's source code and the profile's sizes.

Every notebook needs the same generated data,
so it is generated once and read back (pickle of our own records, written atomically; a file that does
not load is regenerated). Changing the generator's code changes the key, so stale phantoms are never read.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path

from .. import paths
from ..config import Profile
from ..io import atomic_path
from .types import DomainData

log = logging.getLogger(__name__)
_SOURCES = ("phantoms.py", "splits.py", "types.py")


def phantom_key(domain: str, profile: Profile) -> str:
    """Hash of the generator code and every profile field that shapes a phantom domain."""
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update((Path(__file__).parent / name).read_bytes())
    fields = (domain, profile.phantom_size, profile.phantom_depth, profile.n_train, profile.n_test,
              profile.spleen_train_volumes, profile.spleen_test_volumes, profile.data_seed)
    h.update(repr(fields).encode())
    return h.hexdigest()[:24]


def cached_phantom_domain(domain: str, profile: Profile, root: str | Path | None = None) -> DomainData:
    """The phantom DomainData of ``domain``: read from the cache, or generated and stored."""
    from .phantoms import phantom_domain

    root = Path(root) if root is not None else paths.cache_root() / "phantoms"
    path = root / f"{domain}-{phantom_key(domain, profile)}.pkl"
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                data = pickle.load(fh)
            if isinstance(data, DomainData) and data.domain == domain:
                return data
        except Exception as exc:  # noqa: BLE001 - any unreadable file is regenerated
            log.warning("phantom cache %s is unreadable (%s); regenerating", path, exc)
        path.unlink(missing_ok=True)
    data = phantom_domain(domain, profile)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return data
