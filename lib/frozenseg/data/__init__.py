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
        records = load_folder(folder, domain, max_side=profile.real_max_side)
        return _split(domain, "folder", records, profile, {"dataset": f"folder {folder}"})
    check_domain(domain)
    if source == "phantom":
        from .store import cached_phantom_domain

        return cached_phantom_domain(domain, profile)
    if source != "real":
        raise ConfigError(f"unknown data source {source!r}; use 'phantom', 'real' or a folder")
    return _real_domain(domain, profile)


CXR_LUNGS_LAYOUT = "resized to 512 px without keeping the aspect ratio, lungs merged: not the official layout"


def budgets_for(data: DomainData, budgets) -> tuple[int, ...]:
    """The label budgets N a domain's train pool can hold (a real sample's pool may be smaller than the largest N;
    the budgets it cannot hold are left out, never filled with repeats)."""
    fits = tuple(int(n) for n in budgets if int(n) <= len(data.train))
    return fits or (len(data.train),)


def real_available(domain: str, root=None) -> bool:
    """True when a real dataset of ``domain`` is under the data root (``root``, default FROZENSEG_DATA): its own
    datasets, or a folder that stands in for them (spleen: the silver CT folder; chest X-ray: the resized
    Montgomery + Shenzhen folder)."""
    from .. import manifest
    from .loaders import DATASET_KEYS, STAND_INS

    present = {r["key"] for r in manifest.status(root) if r["present"]}
    if set(STAND_INS.get(domain, ())) & present:
        return True
    if domain == "spleen":
        return bool(set(DATASET_KEYS[domain]) & present)
    return domain in DATASET_KEYS and set(DATASET_KEYS[domain]) <= present


def _real_domain(domain: str, profile: Profile) -> DomainData:
    """A real dataset split as the profile says (``profile.splits``: the dataset's official split where it has one
    and is present, else a seeded random split; what was done is in ``meta['split']``)."""
    from .. import manifest
    from .loaders import load_cxr_lungs, load_isic, load_spleen_silver

    kw = {"max_side": profile.real_max_side}
    how = (profile.splits or {}).get(domain, "random")
    present = {r["key"] for r in manifest.status() if r["present"]}
    if domain == "spleen":
        if "msd_spleen" in present or "spleen_ct_silver" not in present:
            return _split(domain, "real", load_real("spleen"), profile, {"dataset": "msd_spleen"})
        vols = load_spleen_silver()
        return _split(domain, "real", vols, profile, {"dataset": "spleen_ct_silver", "labels": "silver"},
                      groups={v.volume_id: v.meta["group"] for v in vols})
    if domain == "cxr" and not {"montgomery", "shenzhen"} <= present and "cxr_lungs" in present:
        return _split(domain, "real", load_cxr_lungs(**kw), profile,
                      {"dataset": "cxr_lungs", "layout": CXR_LUNGS_LAYOUT})
    if domain == "isic" and how == "official":
        if "isic2018_task1_eval" in present:
            return _fixed(domain, load_isic(**kw), load_isic(part="test", **kw), profile,
                          "ISIC 2018's official split: train pool from its training part, test = its test part")
        how = "random"
        note = "official ISIC 2018 test part not present (manifest isic2018_task1_eval), so: "
    elif domain == "kvasir" and how == "pranet":
        records = load_real("kvasir", **kw)
        test_ids = set(pranet_test_ids())
        return _fixed(domain, [c for c in records if c.case_id not in test_ids],
                      [c for c in records if c.case_id in test_ids], profile,
                      "the widely used Kvasir-SEG 900/100 split (PraNet's 100 test images)")
    else:
        note = ""
    return _split(domain, "real", load_real(domain, **kw), profile, {"dataset": domain, "split_note": note})


def pranet_test_ids() -> list[str]:
    """The 100 Kvasir-SEG image ids of PraNet's test set (the 900/100 split), from the file beside this module."""
    from pathlib import Path

    text = (Path(__file__).with_name("kvasir_pranet_test.txt")).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _fixed(domain: str, train: list, test: list, profile: Profile, how: str) -> DomainData:
    """A dataset with its own train / test split: the test part as it is (cut to ``profile.n_test`` when set), the
    train pool cut to ``profile.n_train`` by the data seed."""
    from .splits import subsample_train

    if not test:
        raise DataError(None, f"{domain}: the official test split holds no case present on disk",
                        "check the dataset folder, or use the profile's random split")
    test = test[: profile.n_test] if profile.n_test else test
    train = subsample_train(train, min(profile.n_train, len(train)), profile.data_seed)
    meta = {"split": how, "n_records": len(train) + len(test), "dataset": domain}
    return DomainData(domain=domain, source="real", train=train, test=test, meta=meta)


def _split(domain: str, source: str, records: list, profile: Profile, meta: dict | None = None,
           groups: dict | None = None) -> DomainData:
    """Fixed test split (by the profile's data seed) and a train pool capped at ``profile.n_train``; volumes that
    share a ``groups`` entry (cut from one scan) stay on one side. ``meta['split']`` says what was done."""
    from .splits import split_cases, split_volumes, subsample_train

    if not records:
        raise DataError(None, f"no cases found for domain {domain!r}", "check the folder layout (see data_manifest.yaml)")
    seed, meta = profile.data_seed, dict(meta or {})
    note = meta.pop("split_note", "")
    meta["n_records"] = len(records)
    if isinstance(records[0], Volume):
        n_test = profile.spleen_test_volumes
        train_v, test_v = split_volumes(records, n_test, seed, groups=groups)
        meta["split"] = note + (f"seeded random split by scan (data seed {seed}): {len(test_v)} test volume(s)"
                                + (", volumes of one scan kept together" if groups else ""))
        return DomainData.from_volumes(domain, source, train_v[: profile.spleen_train_volumes], test_v, meta)
    train, test = split_cases(records, profile.n_test, seed)
    train = subsample_train(train, min(profile.n_train, len(train)), seed)
    meta["split"] = note + f"seeded random split (data seed {seed}): {len(test)} test case(s)"
    return DomainData(domain=domain, source=source, train=train, test=test, meta=meta)
