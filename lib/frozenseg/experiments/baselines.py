"""Notebook 06's sweep: every (domain, arch, N, seed) trained once, resumable, nnU-Net's runs beside them when it is
installed, one tidy results table. The networks and their training loop are :mod:`frozenseg.baselines`'s."""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import evaluation as ev
from .. import paths
from ..baselines import nnunet
from ..baselines.nets import SMALL_ARCHS, STUDY_ARCHS, arch_label, build_net, check_arch
from ..baselines.nnunet import nnunet_available
from ..baselines.train import STATUS_FAILED, TrainRun, predict_masks, prepare, train_net
from ..devices import record
from ..errors import ConfigError
from ..io import atomic_path, write_json_atomic

NOTEBOOK = "06_trained_baselines"
# Sizes when a profile leaves them open (Profile.baselines overrides; budgets None = Profile.budgets).
DEFAULTS = {"archs": STUDY_ARCHS, "budgets": None, "image_side": 256, "batch_size": 8, "steps": 2000,
            "eval_every": 100, "patience": 5, "min_delta": 0.0, "monitor": "val_loss", "precision": "fp32", "lr": 3e-4,
            "threads": None, "weight_decay": 1e-4, "val_fraction": 0.2,
            "bg_ratio": 0.3, "pretrained": "auto", "keep_checkpoints": True, "n_test": None,
            "nnunet": False, "nnunet_trainer": "nnUNetTrainer", "nnunet_configuration": "2d", "nnunet_fold": "0"}
TRAIN_KEYS = ("steps", "batch_size", "lr", "weight_decay", "eval_every", "patience", "min_delta", "monitor",
              "precision", "val_fraction")
FLIP_DOMAINS = frozenset({"isic", "kvasir"})   # no laterality there: flips keep the label valid
# The code a finished run's rows depend on (paths under lib/frozenseg, hashed into its signature): the networks, their
# training, this runner and the scoring of its test predictions; an edit retrains and rescores.
CODE_FILES = ("baselines/nets.py", "baselines/train.py", "experiments/baselines.py", "training.py",
              "evaluation/metrics.py", "evaluation/units.py", "data/native.py")
RUN_FILE, ROWS_FILE, CURVE_FILE, CKPT_FILE = "run.json", "rows.parquet", "curve.csv", "best.pt"
INFO_COLUMNS = ["arch", "n_labels", "labels_used", "init", "status", "stop", "steps_run", "best_step", "val_dice",
                "train_s", "n_fit", "n_val", "n_bg", "image_side", "message"]


def baseline_params(profile) -> dict:
    """The profile's trained-baseline settings over DEFAULTS (budgets default to the profile's N budgets)."""
    params = {**DEFAULTS, **(getattr(profile, "baselines", None) or {})}
    params["budgets"] = tuple(int(n) for n in (params["budgets"] or profile.budgets))
    params["archs"] = tuple(check_arch(a) for a in params["archs"])
    return params


def size_caption(params: dict) -> str:
    """What every table and figure of notebook 06 says about the networks and how long they trained."""
    nets = " and ".join(arch_label(a) for a in params["archs"])
    why = ("; these are smaller than the study's U-Net (ResNet-34) and SegFormer (MiT-B2) so that every run reaches "
           "its validation plateau on a 2-core CPU" if set(params["archs"]) <= set(SMALL_ARCHS) else "")
    mixed = (", bfloat16 mixed precision where the device supports it (else fp32)" if params["precision"] == "bf16"
             else "")
    return (f"{nets} at {params['image_side']} px{why}; AdamW lr {params['lr']:g}, batch {params['batch_size']}{mixed}, "
            f"validation every {params['eval_every']} steps, {monitor_note(params)}, at most {params['steps']} steps")


def monitored(params: dict) -> str:
    """'validation loss' or 'validation Dice': the score ``params['monitor']`` keeps weights and stops runs on."""
    return {"val_loss": "validation loss", "val_dice": "validation Dice"}[params["monitor"]]


def monitor_note(params: dict) -> str:
    """Which weights a run keeps and when it stops, from ``params['monitor']``, ``patience`` and ``min_delta``."""
    d = float(params["min_delta"])
    if params["monitor"] == "val_loss":
        kept, gain = "the lowest validation loss", f"a validation loss more than {d:.0%} lower" if d else "a lower one"
    else:
        kept, gain = "the highest validation Dice", f"a validation Dice more than {d:g} higher" if d else "a higher one"
    return (f"weights kept at {kept}, stopped after {params['patience']} evaluations in a row without {gain} "
            "(the plateau)")


@dataclass(frozen=True)
class RunKey:
    """One training run of the sweep."""

    domain: str
    arch: str
    n: int
    seed: int

    @property
    def name(self) -> str:
        """Folder name, e.g. 'unet_r34_n025_s0'."""
        return f"{self.arch}_n{self.n:03d}_s{self.seed}"

    @property
    def method(self) -> str:
        """Method name in results rows, e.g. 'unet_r34_n25'."""
        return f"{self.arch}_n{self.n}"


def plan_runs(domains, archs, budgets, seeds) -> list[RunKey]:
    """Every run of the sweep in a fixed order (domain, N, seed, arch)."""
    return [RunKey(d, a, int(n), int(s)) for d in domains for n in budgets for s in seeds for a in archs]


# ---------------------------------------------------------------- where runs live, what they train and are scored on


def runs_root(profile: str) -> Path:
    """Where run folders live: ``results/<profile>/06_trained_baselines/runs/``."""
    return paths.results_dir(profile) / NOTEBOOK / "runs"


def check_budget(domain: str, n: int, pool: int) -> None:
    """Raise a ConfigError naming the pool size when N exceeds the train pool."""
    if n < 1 or n > pool:
        raise ConfigError(f"N={n} labelled cases asked for domain {domain!r}, but its train pool holds {pool}; "
                          "use budgets <= the pool size or a profile with a larger n_train")


def train_volume(study, domain: str, volume_id: str):
    """A train volume by id (the DomainData keeps them), or None when the domain has none (2D folders)."""
    data = study.data(domain)
    if volume_id not in data.meta.get("train_volumes", []):
        raise ConfigError(f"{volume_id!r} is not a train volume of {domain!r}")
    return data.train_volumes.get(volume_id)


def test_units(study, domain: str, n_test: int | None) -> tuple[list, list]:
    """(2D test cases, test volumes): ``ev.test_units`` (2D negatives kept; spleen: whole volumes, every slice
    predicted)."""
    data = study.data(domain)
    test = ev.test_units(data, n_test)
    if data.volumes:
        return [], [data.volumes[v] for v in dict.fromkeys(c.volume_id for c in test)]
    return test, []


# ---------------------------------------------------------------- training data


def labelled_cases(study, domain: str, n: int, seed: int, bg_ratio: float) -> tuple[list, int]:
    """The seeded nested N-label train subset, plus background slices of the same volumes for CT; (cases, n_bg)."""
    from ..data.background import background_count
    from ..data.splits import subsample_train

    train = study.data(domain).train
    check_budget(domain, n, len(train))
    fg = subsample_train(train, n, seed)
    bg = background_slices(study, domain, fg, background_count(n, bg_ratio), seed) if fg[0].volume_id else []
    return fg + bg, len(bg)


def background_slices(study, domain: str, labelled, k: int, seed: int) -> list:
    """``k`` seeded spleen-free slices of the train volumes the labelled slices come from (never test volumes)."""
    from ..data.background import background_draw

    ids = sorted({c.volume_id for c in labelled})
    vols = {v.volume_id: v for v in (train_volume(study, domain, vid) for vid in ids) if v is not None}
    return [vols[vid].slice_case(z) for vid, z in background_draw(vols.values(), k, seed)]


# ---------------------------------------------------------------- test scoring


def units_note(study, n_test: int | None, titles: dict[str, str] | None = None) -> str:
    """'Test units per domain: ISIC 15 (2 without a target); ...' and the empty-mask rule."""
    parts = []
    for d in study.domains:
        cases, volumes = test_units(study, d, n_test)
        units = cases or volumes
        neg = sum(not u.mask.any() for u in units)
        kind = ("volume" if volumes else "image") + ("" if len(units) == 1 else "s")
        parts.append(f"{(titles or {}).get(d, d)} {len(units)} {kind} ({neg} without a target)")
    return f"Test units per domain: {'; '.join(parts)}. {ev.EMPTY_RULE[0].upper()}{ev.EMPTY_RULE[1:]}."


def score_rows(net, cases, volumes, side: int) -> list[dict]:
    """Per-case rows for 2D test cases (scored at the file's native size, ``ev.score_case``) and per-volume 3D rows
    for test volumes (``ev.score_volume``); each row says whether its unit is a negative."""
    rows = []
    for case, m in zip(cases, predict_masks(net, [c.image for c in cases], side)):
        rows.append({"case_id": case.case_id, "volume_id": None, "unit": "case", "flag": "",
                     **ev.score_case(m, case, with_hd95=False)})
    for vol in volumes:
        rows.append({"case_id": vol.volume_id, "volume_id": vol.volume_id, "unit": "volume", "flag": "",
                     **ev.score_volume(predict_volume(net, vol, side), vol, with_hd95=False)})
    return rows


def predict_volume(net, vol, side: int) -> np.ndarray:
    """(H, W, D) boolean prediction of every axial slice of a volume."""
    depth = vol.image.shape[2]
    slices = [np.repeat(vol.image[:, :, z, None], 3, axis=2) for z in range(depth)]
    return ev.assemble_volume(vol.image.shape, dict(enumerate(predict_masks(net, slices, side))))


def failed_rows(cases, volumes) -> list[dict]:
    """NaN rows flagged 'training_failed' for every test unit of a diverged run (never scored as empty)."""
    units = ([(c.case_id, None, "case", not c.mask.any()) for c in cases]
             + [(v.volume_id, v.volume_id, "volume", not v.mask.any()) for v in volumes])
    return [{"case_id": c, "volume_id": v, "unit": u, "dice": np.nan, "iou": np.nan, "flag": "training_failed",
             "negative": neg} for c, v, u, neg in units]


def kept_val_dice(run: TrainRun) -> float:
    """The validation Dice at the weights the run kept (its history at ``best_step``; NaN without one)."""
    at = [h["val_dice"] for h in run.history if h["step"] == run.best_step]
    return float(at[-1]) if at and run.ok else float("nan")


# ---------------------------------------------------------------- one run, resumable


def signature(study, key: RunKey, params: dict) -> dict:
    """What a finished run's rows depend on: settings, data identity and init (a change retrains)."""
    data = study.data(key.domain)
    ids = hashlib.sha256(json.dumps([[c.case_id for c in data.train], [c.case_id for c in data.test]]).encode())
    return {"profile": study.profile.name, "source": study.source_of(key.domain), "data": ids.hexdigest()[:16],
            "code": code_hash(),
            "train": {k: params[k] for k in TRAIN_KEYS}, "image_side": params["image_side"],
            "bg_ratio": params["bg_ratio"], "pretrained": str(params["pretrained"]), "n_test": params["n_test"],
            "threads": params.get("threads"),
            "key": [key.domain, key.arch, key.n, key.seed]}


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """Hash of the code that trains and scores a run (an edit retrains, as the runner reruns edited notebooks)."""
    h = hashlib.sha256()
    root = Path(__file__).parents[1]
    for name in CODE_FILES:
        h.update((root / name).read_bytes())
    return h.hexdigest()[:16]


def finished_rows(folder: Path, sig: dict) -> pd.DataFrame | None:
    """Rows of a run finished with the same signature, else None (missing, partial or stale)."""
    run_file, rows_file = folder / RUN_FILE, folder / ROWS_FILE
    if not (run_file.is_file() and rows_file.is_file()):
        return None
    try:
        rec = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return pd.read_parquet(rows_file) if rec.get("signature") == sig else None


def run_one(study, key: RunKey, params: dict, root: Path | None = None, progress=None) -> tuple[pd.DataFrame, bool]:
    """Train, score and save one run, or read it back when already finished; returns (rows, was_trained)."""
    from ..models import default_device
    from ..repro import seed_everything

    params = {**DEFAULTS, **params}     # keys a caller leaves out take the defaults
    folder = Path(root or runs_root(study.profile.name)) / key.domain / key.name
    sig = signature(study, key, params)
    done = finished_rows(folder, sig)
    if done is not None:
        return done, False
    train, n_bg = labelled_cases(study, key.domain, key.n, key.seed, params["bg_ratio"])
    if params.get("threads"):                 # a fixed thread count: the same numbers serially or on any worker
        import torch

        torch.set_num_threads(int(params["threads"]))
    seed_everything(key.seed)
    net, init = build_net(key.arch, params["pretrained"], key.seed)
    net = net.to(default_device())                     # a GPU when present (the full profile)
    record(f"network {key.arch}", net)
    x, y = prepare(train, params["image_side"])
    run = train_net(net, x, y, seed=key.seed, flip=key.domain in FLIP_DOMAINS, progress=progress,
                    **{k: params[k] for k in TRAIN_KEYS})
    cases, volumes = test_units(study, key.domain, params["n_test"])
    rows = score_rows(net, cases, volumes, params["image_side"]) if run.ok else failed_rows(cases, volumes)
    df = pd.DataFrame(rows).assign(domain=key.domain, seed=key.seed, method=key.method,
                                   **run_info(run, key, init, n_bg, params["image_side"]))
    save_run(folder, run, df, sig, params["keep_checkpoints"])
    return df, True


def run_info(run: TrainRun, key: RunKey, init: str, n_bg: int, side: int) -> dict:
    """Per-run columns repeated on every row of that run."""
    return {"arch": key.arch, "n_labels": key.n, "init": init, "status": run.status, "stop": run.stop,
            "steps_run": run.steps_run, "best_step": run.best_step, "val_dice": kept_val_dice(run),
            "train_s": round(run.seconds, 2),
            "n_fit": len(run.train_index), "n_val": len(run.val_index), "n_bg": n_bg,
            "labels_used": len(run.train_index) + len(run.val_index), "image_side": side, "message": run.message}


def save_run(folder: Path, run: TrainRun, rows: pd.DataFrame, sig: dict, keep_checkpoint: bool) -> None:
    """Checkpoint, training curve and rows, each atomically; ``run.json`` last, so it marks a finished run."""
    import torch

    if keep_checkpoint and run.state is not None:
        with atomic_path(folder / CKPT_FILE) as tmp:
            torch.save({k: v.cpu() for k, v in run.state.items()}, tmp)
    with atomic_path(folder / CURVE_FILE) as tmp:
        pd.DataFrame(run.history, columns=["step", "train_loss", "val_loss", "val_dice"]).to_csv(tmp, index=False)
    with atomic_path(folder / ROWS_FILE) as tmp:
        rows.to_parquet(tmp, index=False)
    write_json_atomic(folder / RUN_FILE, {"signature": sig, "status": run.status, "message": run.message,
                                          "best_step": run.best_step, "steps_run": run.steps_run, "stop": run.stop,
                                          "val_dice": _json_float(kept_val_dice(run)),
                                          "seconds": round(run.seconds, 2), "checkpoint": keep_checkpoint and run.ok})


def _json_float(x: float) -> float | None:
    """A float for JSON: None where it is NaN (strict JSON has no NaN)."""
    return None if x != x else x


def training_curves(study, root: Path | None = None) -> pd.DataFrame:
    """Every saved training curve of this study's runs, tagged with its run."""
    root = Path(root or runs_root(study.profile.name))
    parts = []
    for f in sorted(root.glob(f"*/*/{CURVE_FILE}")):
        arch, n, s = f.parent.name.rsplit("_", 2)
        parts.append(pd.read_csv(f).assign(domain=f.parent.parent.name, arch=arch, n_labels=int(n[1:]),
                                           seed=int(s[1:])))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# ---------------------------------------------------------------- the sweep


def _run_key(study, key: RunKey, params: dict, root: Path) -> tuple[pd.DataFrame, bool]:
    """One run as a sweep unit (module level, so Dask workers import it by name)."""
    return run_one(study, key, params, root)


def run_sweep(study, params: dict | None = None, root: Path | None = None, notebook: str = NOTEBOOK,
              progress: bool = True, scheduler=None) -> pd.DataFrame:
    """Every (domain, arch, N, seed) run, finished ones read back; one tidy table (results rows). The runs go through
    ``frozenseg.distributed.run_units``: a local Dask cluster by default, ``FROZENSEG_SCHEDULER`` (or
    ``scheduler``) for serial or an existing cluster; each run is resumable and seeds itself, so the table is the
    same whichever runs it."""
    from ..data import budgets_for
    from ..distributed import run_units

    params = {**DEFAULTS, **params} if params else baseline_params(study.profile)
    keys = []
    for d in study.domains:
        fits = budgets_for(study.data(d), params["budgets"])
        left = [n for n in params["budgets"] if n not in fits]
        if left:
            print(f"{d}: N={', '.join(map(str, left))} left out (train pool {len(study.data(d).train)})")
        keys += plan_runs([d], params["archs"], fits, study.seeds)
    root = Path(root or runs_root(study.profile.name))
    outs = run_units(functools.partial(_run_key, params=params, root=root), keys, study, scheduler=scheduler,
                     desc="trained baselines", progress=progress)
    parts = [df.assign(source=study.source_of(key.domain)) for key, (df, _) in zip(keys, outs)]
    trained = sum(new for _, new in outs)
    if params.get("nnunet"):
        parts += nnunet_sweep(study, params, root)
    print(f"{trained} run(s) trained, {len(keys) - trained} finished run(s) read back")
    out = pd.concat(parts, ignore_index=True)
    return out.assign(notebook=notebook, profile=study.profile.name, model=out.arch)


# ---------------------------------------------------------------- nnU-Net's runs (frozenseg.baselines.nnunet)


def write_dataset(study, domain: str, n: int, seed: int, budgets, raw_root: Path) -> Path:
    """nnU-Net's raw layout of one (domain, N, seed) under ``raw_root``: the networks' seeded N-label draw and the
    test units they are scored on; returns the dataset folder."""
    from ..data.splits import subsample_train

    data = study.data(domain)
    check_budget(domain, n, len(data.train))
    folder = Path(raw_root) / nnunet.dataset_name(domain, n, seed, budgets)
    cases, volumes = test_units(study, domain, None)
    return nnunet.write_raw_dataset(folder, domain, subsample_train(data.train, n, seed), cases, volumes,
                                    lambda vid: train_volume(study, domain, vid),
                                    about={"n": n, "seed": seed, "source": study.source_of(domain)})


def import_predictions(study, folder: Path, pred_dir: Path, seed: int, n: int,
                       val_dice: float = float("nan")) -> pd.DataFrame:
    """Score nnU-Net's predictions of the test split into results rows (arch 'nnunet', init 'from scratch'): 2D cases
    at the file's native size (``ev.score_case``), volumes in 3D (``ev.score_volume``); ``val_dice`` is its own fold
    validation Dice (:func:`frozenseg.baselines.nnunet.fold_val_dice`)."""
    info = json.loads((folder / "cases.json").read_text(encoding="utf-8"))
    domain = info["domain"]
    cases, volumes = test_units(study, domain, None)
    rows = []
    for c in cases:
        m = nnunet.read_prediction(Path(pred_dir) / f"{c.case_id}.nii.gz").reshape(c.mask.shape) == 1
        rows.append({"case_id": c.case_id, "volume_id": None, "unit": "case", "flag": "",
                     **ev.score_case(m, c, with_hd95=False)})
    for v in volumes:
        m = nnunet.read_prediction(Path(pred_dir) / f"{v.volume_id}.nii.gz") == 1
        rows.append({"case_id": v.volume_id, "volume_id": v.volume_id, "unit": "volume", "flag": "",
                     **ev.score_volume(m, v, with_hd95=False)})
    return pd.DataFrame(rows).assign(domain=domain, seed=seed, method=f"nnunet_n{n}", arch="nnunet", n_labels=n,
                                     labels_used=n, stop="nnU-Net's own schedule",
                                     init="from scratch", status="ok", steps_run=np.nan, best_step=np.nan,
                                     val_dice=float(val_dice), train_s=np.nan, n_fit=n, n_val=np.nan, n_bg=0,
                                     image_side=np.nan, message="")


def nnunet_sweep(study, params: dict, root: Path | None = None) -> list[pd.DataFrame]:
    """Write, run and import every (domain, N, seed) when nnU-Net is installed; finished imports are read back."""
    if not nnunet_available():
        print("nnU-Net not installed: its rows are skipped (pip install -e '.[nnunet]', see notebook 06)")
        return []
    base = Path(root or runs_root(study.profile.name)).parent / "nnunet"
    kw = {"configuration": params["nnunet_configuration"], "fold": params["nnunet_fold"],
          "trainer": params["nnunet_trainer"]}
    from ..data import budgets_for

    parts = []
    for dom in study.domains:
        for n in budgets_for(study.data(dom), params["budgets"]):
            for seed in study.seeds:
                parts.append(_one_nnunet(study, dom, n, seed, params["budgets"], base, kw)
                             .assign(source=study.source_of(dom)))
    return parts


def _one_nnunet(study, dom: str, n: int, seed: int, budgets, base: Path, kw: dict) -> pd.DataFrame:
    """One nnU-Net run, resumable: rows.parquet beside the predictions marks it finished."""
    done = base / "rows" / f"{nnunet.dataset_name(dom, n, seed, budgets)}.parquet"
    if done.is_file():
        return pd.read_parquet(done)
    folder = write_dataset(study, dom, n, seed, budgets, nnunet.nnunet_dirs(base)["nnUNet_raw"])
    pred = nnunet.run_commands(folder, base, **kw)
    rows = import_predictions(study, folder, pred, seed, n, nnunet.fold_val_dice(base, folder, **kw))
    with atomic_path(done) as tmp:
        rows.to_parquet(tmp, index=False)
    return rows


def failed_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per failed run (status 'failed') with its message."""
    cols = ["domain", "arch", "n_labels", "seed", "steps_run", "message"]
    failed = df[df.status == STATUS_FAILED][cols]
    return failed.drop_duplicates(["domain", "arch", "n_labels", "seed"]).reset_index(drop=True)
