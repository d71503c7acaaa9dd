"""nnU-Net v2 adapter: write its raw-data layout for given labelled cases and test units, run plan / train / predict
by subprocess (full profile, only when nnU-Net is installed), and read its predictions and fold validation back.
Which cases a run of notebook 06 writes, and how its predictions are scored, is :mod:`frozenseg.experiments.baselines`.

nnU-Net conflicts with this project's timm pin (nnunetv2 2.8 needs timm < 1.0.23), so it lives in the optional
extra ``nnunet`` (pinned to 2.6.2 + dynamic-network-architectures 0.4.1, which accept our timm) or in a separate
environment whose ``nnUNetv2_*`` commands are on PATH.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..config import DOMAINS
from ..errors import ConfigError, DataError
from ..io import atomic_path, write_json_atomic

TARGETS = {"isic": "lesion", "spleen": "spleen", "kvasir": "polyp", "cxr": "lung"}
IGNORE = 2          # nnU-Net's ignore label (the highest label): spleen slices outside the N labelled ones
COMMANDS = ("nnUNetv2_plan_and_preprocess", "nnUNetv2_train", "nnUNetv2_predict")


def nnunet_available() -> bool:
    """True when nnunetv2 is importable here or its commands are on PATH (a separate environment)."""
    return importlib.util.find_spec("nnunetv2") is not None or all(shutil.which(c) for c in COMMANDS)


def dataset_id(domain: str, n: int, seed: int, budgets) -> int:
    """nnU-Net's 3-digit dataset id of one (domain, N, seed): 500 + 100 x domain + 20 x budget index + seed."""
    budgets = sorted(int(b) for b in budgets)
    di = DOMAINS.index(domain) if domain in DOMAINS else len(DOMAINS)
    if n not in budgets or not 0 <= seed < 20 or len(budgets) > 5:
        raise ConfigError(f"nnU-Net dataset ids cover seeds 0-19 and up to 5 budgets; got seed {seed}, N={n}, "
                          f"budgets {budgets}")
    return 500 + 100 * di + 20 * budgets.index(n) + seed


def dataset_name(domain: str, n: int, seed: int, budgets) -> str:
    """'Dataset512_frozenseg_isic_n25_s0' style folder name."""
    return f"Dataset{dataset_id(domain, n, seed, budgets):03d}_frozenseg_{domain}_n{n}_s{seed}"


def nnunet_dirs(root: Path) -> dict[str, Path]:
    """nnUNet_raw / nnUNet_preprocessed / nnUNet_results under ``root``."""
    root = Path(root)
    return {"nnUNet_raw": root / "raw", "nnUNet_preprocessed": root / "preprocessed",
            "nnUNet_results": root / "results"}


# ---------------------------------------------------------------- writing the raw layout


def _nifti(path: Path, array: np.ndarray, spacing) -> None:
    """Write ``array`` as NIfTI (gzip) with a diagonal affine of ``spacing`` mm, atomically."""
    import nibabel as nib

    affine = np.diag([float(s) for s in spacing] + [1.0])
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(nib.Nifti1Image(array, affine).to_bytes(), mtime=0))


def channels_of(image: np.ndarray) -> list[np.ndarray]:
    """One array per channel: grey images replicated to RGB (CT, X-ray) are written once."""
    if image.ndim == 3 and image.shape[-1] == 3 and not (np.array_equal(image[..., 0], image[..., 1])
                                                         and np.array_equal(image[..., 0], image[..., 2])):
        return [image[..., c] for c in range(3)]
    return [image[..., 0] if image.ndim == 3 else image]


def write_case_2d(folder: Path, name: str, image: np.ndarray, n_channels: int, spacing=None) -> list[Path]:
    """``{name}_{c:04d}.nii.gz`` per channel, each an (H, W, 1) slab (nnU-Net reads it as a 2D case)."""
    grey = image[..., 0] if image.ndim == 3 else image
    chans = [image[..., c] if image.ndim == 3 else grey for c in range(3)] if n_channels == 3 else [grey]
    sp = tuple(spacing or (1.0, 1.0)) + (1.0,)
    out = []
    for c, ch in enumerate(chans):
        out.append(folder / f"{name}_{c:04d}.nii.gz")
        _nifti(out[-1], np.ascontiguousarray(ch[:, :, None]).astype(np.uint8), sp)
    return out


def write_label(folder: Path, name: str, label: np.ndarray, spacing) -> Path:
    """``{name}.nii.gz`` with uint8 labels (0 background, 1 target, 2 ignore)."""
    path = folder / f"{name}.nii.gz"
    lab = label[:, :, None] if label.ndim == 2 else label
    _nifti(path, np.ascontiguousarray(lab).astype(np.uint8), tuple(spacing) + ((1.0,) if label.ndim == 2 else ()))
    return path


def dataset_json(domain: str, n_channels: int, n_training: int, ignore: bool) -> dict:
    """nnU-Net v2's dataset.json: channel names, labels (ignore label last), numTraining, file ending."""
    names = {"0": "R", "1": "G", "2": "B"} if n_channels == 3 else {"0": "grey"}
    labels = {"background": 0, TARGETS.get(domain, "target"): 1}
    if ignore:
        labels["ignore"] = IGNORE
    return {"channel_names": names, "labels": labels, "numTraining": int(n_training), "file_ending": ".nii.gz",
            "name": f"frozenseg {domain}", "description": "written by frozenseg.baselines.nnunet (phantom or real, "
            "see cases.json)", "overwrite_image_reader_writer": "NibabelIO"}


def write_raw_dataset(folder: Path, domain: str, labelled, test_cases=(), test_volumes=(), train_volume=None,
                      about: dict | None = None) -> Path:
    """imagesTr/labelsTr/imagesTs/dataset.json/cases.json in ``folder``: the labelled 2D cases and the test images,
    or, with ``test_volumes``, the whole train volumes (``train_volume(volume_id)``) whose only labelled slices are
    the labelled ones, and the test volumes; ``about`` (e.g. N, seed, source) goes into cases.json after the domain."""
    folder = Path(folder)
    if test_volumes:
        n_tr, ncha = _write_volumes(domain, labelled, test_volumes, folder, train_volume)
    else:
        n_tr, ncha = _write_images(labelled, test_cases, folder)
    write_json_atomic(folder / "dataset.json", dataset_json(domain, ncha, n_tr, ignore=bool(test_volumes)))
    test = [c.case_id for c in test_cases] + [v.volume_id for v in test_volumes]
    write_json_atomic(folder / "cases.json", {"domain": domain, **(about or {}), "train": [c.case_id for c in labelled],
                                              "test": test, "unit": "volume" if test_volumes else "case"})
    return folder


def _write_images(labelled, test, folder: Path) -> tuple[int, int]:
    """2D cases: one NIfTI slab per channel, labels 0/1."""
    ncha = 3 if any(len(channels_of(c.image)) == 3 for c in list(labelled) + list(test)) else 1
    for c in labelled:
        write_case_2d(folder / "imagesTr", c.case_id, c.image, ncha, c.spacing)
        write_label(folder / "labelsTr", c.case_id, c.mask, tuple(c.spacing or (1.0, 1.0)))
    for c in test:
        write_case_2d(folder / "imagesTs", c.case_id, c.image, ncha, c.spacing)
    return len(labelled), ncha


def _write_volumes(domain: str, labelled, test_volumes, folder: Path, train_volume) -> tuple[int, int]:
    """CT: whole train volumes whose only labelled slices are the N chosen ones (the rest is 'ignore')."""
    by_vol: dict[str, list[int]] = {}
    for c in labelled:
        by_vol.setdefault(c.volume_id, []).append(int(c.slice_index))
    for vid, zs in sorted(by_vol.items()):
        vol = train_volume(vid)
        if vol is None:
            raise DataError(None, f"train volume {vid} of {domain} cannot be reloaded", "use a phantom or real domain")
        lab = np.full(vol.mask.shape, IGNORE, np.uint8)
        lab[:, :, zs] = vol.mask[:, :, zs]
        _nifti(folder / "imagesTr" / f"{vid}_0000.nii.gz", vol.image, vol.spacing)
        write_label(folder / "labelsTr", vid, lab, vol.spacing)
    for vol in test_volumes:
        _nifti(folder / "imagesTs" / f"{vol.volume_id}_0000.nii.gz", vol.image, vol.spacing)
    return len(by_vol), 1


# ---------------------------------------------------------------- commands


def commands(folder: Path, configuration: str = "2d", fold: str = "0",
             trainer: str = "nnUNetTrainer") -> list[list[str]]:
    """plan_and_preprocess, train (with --npz) and predict command lines for one written dataset."""
    did = folder.name.split("_")[0].removeprefix("Dataset")
    pred = folder.parent.parent / "predictions" / folder.name
    return [["nnUNetv2_plan_and_preprocess", "-d", did, "-c", configuration, "--verify_dataset_integrity"],
            ["nnUNetv2_train", did, configuration, str(fold), "-tr", trainer, "--npz"],
            ["nnUNetv2_predict", "-i", str(folder / "imagesTs"), "-o", str(pred), "-d", did, "-c", configuration,
             "-f", str(fold), "-tr", trainer]]


def shell_lines(folder: Path, root: Path, **kw) -> str:
    """The manual recipe: environment variables and the three commands, ready to paste into a shell."""
    env = [f"export {k}={v}" for k, v in nnunet_dirs(root).items()]
    return "\n".join(env + [" ".join(c) for c in commands(folder, **kw)])


def run_commands(folder: Path, root: Path, **kw) -> Path:
    """Run plan, train and predict by subprocess with nnU-Net's folders under ``root``; returns the predictions."""
    env = {**os.environ, **{k: str(v) for k, v in nnunet_dirs(root).items()}}
    for cmd in commands(folder, **kw):
        subprocess.run(cmd, env=env, check=True)
    return Path(root) / "predictions" / folder.name


# ---------------------------------------------------------------- reading predictions back


def read_prediction(path: Path) -> np.ndarray:
    """A predicted label map as written by nnU-Net (same array layout as the image we wrote)."""
    import nibabel as nib

    if not path.is_file():
        raise DataError(path, "nnU-Net prediction missing", "run nnUNetv2_predict (see shell_lines) first")
    return np.asarray(nib.load(str(path)).dataobj)


def fold_val_dice(root: Path, folder: Path, configuration: str = "2d", fold: str = "0",
                  trainer: str = "nnUNetTrainer") -> float:
    """nnU-Net's own validation Dice of the fold it trained (``validation/summary.json``, foreground mean, on its
    split of the N labels), NaN when its output has none (then this run cannot be chosen as the best network)."""
    path = (nnunet_dirs(root)["nnUNet_results"] / folder.name / f"{trainer}__nnUNetPlans__{configuration}"
            / f"fold_{fold}" / "validation" / "summary.json")
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["foreground_mean"]["Dice"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("nan")
