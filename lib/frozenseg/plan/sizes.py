"""A run's sizes before it starts, read from file listings and headers only (nothing is decoded): what each dataset
and weight holds, each domain's test units and train pool under a profile, and the training runs with their caps."""
from __future__ import annotations

from pathlib import Path

from ..config import DOMAINS, Profile
from ..errors import ConfigError, DataError, MissingDatasetError


def entry_sizes(root: str | Path | None = None, manifest=None) -> list[dict]:
    """One row per manifest entry: key, kind, present, path, and files (a dataset's images: its first layout
    pattern) or bytes (a weight's file or folder)."""
    from ..manifest import load_manifest, status

    manifest = load_manifest() if manifest is None else manifest
    rows = []
    for r in status(root, manifest):
        entry, path = manifest[r["key"]], Path(r["path"])
        if r["present"] and entry.kind == "dataset":
            r["files"] = sum(1 for _ in path.glob(entry.layout[0]))
        elif r["present"]:
            r["bytes"] = path.stat().st_size if path.is_file() else sum(
                p.stat().st_size for p in path.rglob("*") if p.is_file())
        rows.append(r)
    return rows


def present_keys(root) -> set[str]:
    """Manifest keys present under the data root ``root`` (None: FROZENSEG_DATA)."""
    from ..manifest import status

    return {r["key"] for r in status(root) if r["present"]}


def _folder(key: str, root):
    """A present entry's folder under ``root`` (MissingDatasetError naming it otherwise)."""
    from ..manifest import locate

    return locate(key, root)


def _n_test(n: int, n_test) -> int:
    """How many of ``n`` records the seeded split puts in the test part (``frozenseg.data.splits``)."""
    from ..data.splits import split_indices

    return len(split_indices(n, n_test, 0)[1])


def _slices(path: Path) -> int:
    """Axial slices of a NIfTI volume from its header (the axis the affine points inferior-superior)."""
    import nibabel as nib

    img = nib.load(str(path))
    codes = nib.aff2axcodes(img.affine)
    axis = next((i for i, c in enumerate(codes) if c in ("S", "I")), len(img.shape) - 1)
    return int(img.shape[axis])


def _real_2d(domain: str, profile: Profile, root, present: set[str]) -> dict:
    """Records, test and train-pool counts of a real 2D domain, split as ``frozenseg.data.load_domain`` splits it."""
    from ..data import pranet_test_ids
    from ..data.loaders import pairs_isic, pairs_kvasir, pairs_montgomery, pairs_shenzhen

    how = (profile.splits or {}).get(domain, "random")
    if domain == "isic":
        train = len(pairs_isic(_folder("isic2018_task1", root)))
        if how == "official" and "isic2018_task1_eval" in present:
            test = len(pairs_isic(_folder("isic2018_task1_eval", root), part="test"))
            test = min(test, profile.n_test) if profile.n_test else test
            return {"records": train + test, "test": test, "train_pool": min(profile.n_train, train),
                    "split": "official test part"}
        n = train
    elif domain == "kvasir":
        ids = [p.case_id for p in pairs_kvasir(_folder("kvasir_seg", root))]
        if how == "pranet":
            test = len(set(ids) & set(pranet_test_ids()))
            test = min(test, profile.n_test) if profile.n_test else test
            return {"records": len(ids), "test": test, "train_pool": min(profile.n_train, len(ids) - test),
                    "split": "PraNet's 100 test images"}
        n = len(ids)
    elif not {"montgomery", "shenzhen"} <= present and "cxr_lungs" in present:     # the resized stand-in folder
        from ..data.loaders import pairs_folder

        n = len(pairs_folder(_folder("cxr_lungs", root)))
    else:
        n = len(pairs_montgomery(_folder("montgomery", root))) + len(pairs_shenzhen(_folder("shenzhen", root)))
    test = _n_test(n, profile.n_test)
    return {"records": n, "test": test, "train_pool": min(profile.n_train, n - test), "split": "seeded random"}


def _real_spleen(profile: Profile, root, present: set[str]) -> dict:
    """Volumes and slices of the real spleen data (MSD, else the silver CT folder)."""
    from ..data.loaders import pairs_msd_spleen

    if "msd_spleen" in present or "spleen_ct_silver" not in present:
        images, dataset = [img for _, img, _ in pairs_msd_spleen(_folder("msd_spleen", root))], "msd_spleen"
    else:
        images, dataset = sorted((_folder("spleen_ct_silver", root) / "images").glob("*.nii*")), "spleen_ct_silver"
    slices = [_slices(p) for p in images]
    n = len(images)
    test = _n_test(n, profile.spleen_test_volumes)
    train = min(profile.spleen_train_volumes, n - test)
    per = sum(slices) / max(n, 1)
    return {"records": n, "test_volumes": test, "train_volumes": train, "test": round(test * per),
            "train_pool": round(train * per), "slices_per_volume": round(per, 1), "dataset": dataset,
            "split": "seeded random by volume"}


def domain_sizes(profile: Profile, root: str | Path | None = None, domains=DOMAINS) -> dict[str, dict]:
    """Per domain: source ('real', 'phantom' or 'missing'), test units (slices for spleen), train pool and split,
    for ``profile`` at the data root ``root``."""
    from ..data import real_available

    present = present_keys(root)
    out = {}
    for d in domains:
        real = profile.source == "real" or (profile.source == "auto" and real_available(d, root))
        if not real:
            out[d] = _phantom(d, profile)
            continue
        try:
            sizes = _real_spleen(profile, root, present) if d == "spleen" else _real_2d(d, profile, root, present)
        except DataError as exc:
            why = "missing" if isinstance(exc, MissingDatasetError) else "unreadable"
            out[d] = {"source": "missing", "test": 0, "train_pool": 0, "problem": f"{why}: {exc.problem} ({exc.path})"}
            continue
        except ConfigError as exc:          # e.g. a test size larger than the dataset: the run stops there too
            out[d] = {"source": "missing", "test": 0, "train_pool": 0, "problem": f"cannot split: {exc}"}
            continue
        if not sizes["test"]:
            sizes["problem"] = "no test unit under this split: the run stops at this domain with an error"
        out[d] = {"source": "real", **sizes}
    return out


def _phantom(domain: str, profile: Profile) -> dict:
    """Phantom sizes: the profile's own numbers."""
    if domain == "spleen":
        return {"source": "phantom", "test_volumes": profile.spleen_test_volumes or 0,
                "train_volumes": profile.spleen_train_volumes, "slices_per_volume": profile.phantom_depth,
                "test": (profile.spleen_test_volumes or 0) * profile.phantom_depth,
                "train_pool": profile.spleen_train_volumes * profile.phantom_depth, "split": "phantom"}
    return {"source": "phantom", "test": profile.n_test or 0, "train_pool": profile.n_train, "split": "phantom"}


def live_domains(sizes: dict[str, dict]) -> dict[str, dict]:
    """The domains a run gets through: present, with test units (the others stop it, as the plan says)."""
    return {d: v for d, v in sizes.items() if v.get("source") != "missing" and not v.get("problem")}


def fits_budgets(budgets, pool: int) -> tuple[int, ...]:
    """The budgets a train pool can hold (``frozenseg.data.budgets_for``)."""
    fits = tuple(int(n) for n in budgets if int(n) <= pool)
    return fits or ((pool,) if pool else ())


def training_runs(profile: Profile, sizes: dict[str, dict], seeds, present: set[str] | None = None) -> list[dict]:
    """The run's trainings and fits: what, how many, and the cap that ends each (the plateau usually ends it first)."""
    from ..experiments.baselines import baseline_params
    from ..experiments.budgets import settings
    from ..experiments.concept_search import concept_params
    from ..experiments.fewshot import ARM_LABELS, fewshot_params
    from ..experiments.pretraining import CANDIDATES
    from ..pipeline.genome import MAX_GENOME_LABELS

    s, live = len(list(seeds)), live_domains(sizes)
    bp, fp, cp, pp = baseline_params(profile), fewshot_params(profile), concept_params(profile), settings(profile)
    nb_budgets = sum(len(fits_budgets(bp["budgets"], v["train_pool"])) for v in live.values())
    fs_budgets = sum(len(fits_budgets(fp["budgets"], v["train_pool"])) for v in live.values())
    pipe_budgets = {d: fits_budgets(profile.budgets, v["train_pool"]) for d, v in live.items()}
    other = [k for k in CANDIDATES if k != profile.model and (present is None or weights_present(k, present))]
    rows = [
        {"notebook": "06_trained_baselines", "what": f"trained networks ({', '.join(bp['archs'])})",
         "runs": nb_budgets * s * len(bp["archs"]),
         "cap": f"at most {bp['steps']} steps of batch {bp['batch_size']} each, validation every {bp['eval_every']} "
                f"steps, stopped after {bp['patience']} evaluations without gain"},
        {"notebook": "07_fewshot_decoder", "what": f"decoder tunings ({len(ARM_LABELS)} prompt arms)",
         "runs": fs_budgets * s * len(ARM_LABELS),
         "cap": f"at most {fp['epochs']} epochs each over its N labels, stopped after {fp['patience']} without gain"},
        {"notebook": "08_medical_pretraining",
         "what": f"decoder tunings of the other models ({', '.join(other) or 'none present'})",
         "runs": fs_budgets * s * len(other), "cap": f"at most {fp['epochs']} epochs each (as notebook 07)"},
        {"notebook": "02-05", "what": "pipeline genome fits (bounded Powell)",
         "runs": s * sum(len(b) for d, b in pipe_budgets.items() if d != "spleen" or pp["spleen_genome_budget"]),
         "cap": f"at most {pp['genome_budget']} evaluations on up to {min(pp['n_genome'], MAX_GENOME_LABELS)} "
                f"labelled images (spleen: {pp['spleen_genome_budget']} on {pp['spleen_genome_volumes']} volumes)"},
        {"notebook": "11_concept_search", "what": "concept annotation loops (HUE and random)",
         "runs": len(live) * s * len(cp["starts"]) * 2,
         "cap": f"{cp['rounds']} rounds each: a first fit of {cp['epochs']} epochs, refits of {cp['refit_epochs']}"},
    ]
    if bp.get("nnunet"):
        from ..baselines.nnunet import nnunet_available

        rows.insert(1, {"notebook": "06_trained_baselines", "what": "nnU-Net v2 trainings",
                        "runs": nb_budgets * s if nnunet_available() else 0,
                        "cap": "nnU-Net's own schedule (nnUNetTrainer)" if nnunet_available()
                        else "skipped: nnU-Net is not installed (pip install -e '.[nnunet]')"})
    return rows


def weights_present(model_key: str, present: set[str]) -> bool:
    """True when a model's weights are present (LiteMedSAM's are bundled)."""
    from ..models import MODELS

    weights = MODELS[model_key][1]
    return weights is None or weights in present
