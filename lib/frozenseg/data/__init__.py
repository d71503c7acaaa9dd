"""Data layer: real-format loaders, phantoms, splits, and ``load_domain``, the one entry point notebooks use."""
from __future__ import annotations

from ..config import Profile, check_domain
from ..errors import ConfigError, DataError
from .loaders import load_folder, load_real, read_image, read_mask, to_rgb_uint8  # noqa: F401
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


def _split(domain: str, source: str, records: list, profile: Profile) -> DomainData:
    """Fixed test split (by the profile's data seed) and a train pool capped at ``profile.n_train``."""
    from .splits import split_cases, split_volumes, subsample_train

    if not records:
        raise DataError(None, f"no cases found for domain {domain!r}", "check the folder layout (see data_manifest.yaml)")
    seed = profile.data_seed
    if isinstance(records[0], Volume):
        n_test = profile.spleen_test_volumes
        train_v, test_v = split_volumes(records, n_test, seed)
        train_v = train_v[: profile.spleen_train_volumes]
        slices = lambda vols: [v.slice_case(z) for v in vols for z in v.foreground_slices()]  # noqa: E731
        return DomainData(domain=domain, source=source, train=slices(train_v), test=slices(test_v),
                          volumes={v.volume_id: v for v in test_v},
                          meta={"train_volumes": [v.volume_id for v in train_v],
                                "test_volumes": [v.volume_id for v in test_v]},
                          train_volumes={v.volume_id: v for v in train_v})
    train, test = split_cases(records, profile.n_test, seed)
    train = subsample_train(train, min(profile.n_train, len(train)), seed)
    return DomainData(domain=domain, source=source, train=train, test=test, meta={})
