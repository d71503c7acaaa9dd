"""Data layer: real-format loaders, phantoms, splits, and ``load_domain``, the one entry point notebooks use."""
from __future__ import annotations

from ..config import Profile, check_domain
from ..errors import ConfigError, DataError
from .decoded import DecodedCache  # noqa: F401
from .loaders import decode_pair, load_folder, load_real, read_image, read_mask, to_rgb_uint8  # noqa: F401
from .types import Case, DomainData, Volume, validate_pair  # noqa: F401


def load_domain(domain: str, profile: Profile, source: str = "phantom", folder: str | None = None) -> DomainData:
    """Train pool and fixed test split of ``domain`` from phantoms, the real dataset, or a user folder."""
    if source == "folder" or folder is not None:
        if folder is None:
            raise ConfigError(f"domain {domain!r} has source 'folder' but no folder path")
        return _split(domain, "folder", load_folder(folder, domain, max_side=profile.real_max_side), profile)
    check_domain(domain)
    if source == "phantom":
        from .store import cached_phantom_domain

        return cached_phantom_domain(domain, profile)
    if source != "real":
        raise ConfigError(f"unknown data source {source!r}; use 'phantom', 'real' or a folder")
    kw = {} if domain == "spleen" else {"max_side": profile.real_max_side}
    return _split(domain, "real", load_real(domain, **kw), profile)


def test_subset(data: DomainData, n_test: int | None = None) -> list[Case]:
    """The test cases every method predicts: the fixed test split, cut to its first ``n_test`` units when set
    (2D: cases with a target, an image without one has no Dice to compare; volume domains: whole test volumes,
    each with every one of its slices, empty ones included, scored per volume)."""
    if not data.volumes:
        cases = [c for c in data.test if c.mask.any()]
        return cases if n_test is None else cases[:n_test]
    if n_test is None:
        return list(data.test)
    keep = set(list(dict.fromkeys(c.volume_id for c in data.test))[: max(1, int(n_test))])
    return [c for c in data.test if c.volume_id in keep]


def _split(domain: str, source: str, records: list, profile: Profile) -> DomainData:
    """Fixed test split (by the profile's data seed) and a train pool capped at ``profile.n_train``."""
    from .splits import split_cases, split_volumes, subsample_train

    if not records:
        raise DataError(None, f"no cases found for domain {domain!r}", "check the folder layout (see data_manifest.yaml)")
    seed = profile.data_seed
    if isinstance(records[0], Volume):
        n_test = profile.spleen_test_volumes
        train_v, test_v = split_volumes(records, n_test, seed)
        return DomainData.from_volumes(domain, source, train_v[: profile.spleen_train_volumes], test_v)
    train, test = split_cases(records, profile.n_test, seed)
    train = subsample_train(train, min(profile.n_train, len(train)), seed)
    return DomainData(domain=domain, source=source, train=train, test=test, meta={})
