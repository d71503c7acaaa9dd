"""What an annotate run writes under ``--out``, each file atomically: a mask per unlabelled item in its source
geometry, a per-item record (for resuming), uncertainty.csv, to_annotate.txt and rounds.json."""
from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..io import write_atomic, write_json_atomic, write_text_atomic
from .inputs import Item

STATE = ".state"          # per-item records and the fit's choice, under the output folder


def mask_file(out: Path, item: Item) -> Path:
    """Where an item's mask goes: masks/<name>.png for a 2D image, masks/<name>.nii.gz for a volume or series."""
    return out / "masks" / (f"{item.name}.png" if item.kind == "image" else f"{item.name}.nii.gz")


def source_mask(item: Item, mask: np.ndarray) -> np.ndarray:
    """A working-grid mask in the item's source geometry: a 2D mask at the image's full size (nearest), a volume
    mask from closest RAS back to the file's (or the series') own voxel order."""
    if item.kind == "image":
        rows, cols = item.geometry["size"]
        if mask.shape == (rows, cols):
            return mask
        return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((cols, rows), Image.NEAREST)) > 127
    import nibabel as nib
    from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

    src = item.geometry["source"]
    back = ornt_transform(io_orientation(nib.as_closest_canonical(src).affine), io_orientation(src.affine))
    data = apply_orientation(mask, back)
    return data.reshape(src.shape[:3]) if data.size == int(np.prod(src.shape[:3])) else data


def write_mask(out: Path, item: Item, mask: np.ndarray) -> Path:
    """Write an item's mask atomically in its source geometry (PNG 0/255, or uint8 NIfTI with the source affine)."""
    path = mask_file(out, item)
    data = source_mask(item, mask)
    if item.kind == "image":
        return write_atomic(path, lambda p: Image.fromarray(data.astype(np.uint8) * 255).save(p, format="PNG"))
    import nibabel as nib

    src = item.geometry["source"]
    img = nib.Nifti1Image(data.astype(np.uint8), src.affine)
    img.header.set_zooms(src.header.get_zooms()[:3])
    img.set_qform(src.affine, code=1)
    img.set_sform(src.affine, code=1)
    blob = gzip.compress(img.to_bytes(), mtime=0)
    return write_atomic(path, lambda p: p.write_bytes(blob))


def read_png_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A written PNG mask read back as a boolean array of ``shape`` (nearest-neighbour where its size differs)."""
    m = np.asarray(Image.open(path).convert("L")) > 127
    if m.shape != tuple(shape):
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.NEAREST)) > 127
    return m


def record_path(out: Path, item: Item) -> Path:
    """The per-item record written after its mask."""
    return out / STATE / "items" / f"{item.name}.json"


def load_record(out: Path, item: Item, fit_key: str) -> dict | None:
    """The item's record when it is still valid: same image content, same fitted route, mask file present."""
    path = record_path(out, item)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("key") != item.key or rec.get("fit_key") != fit_key or not (out / rec.get("mask", "\0")).is_file():
        return None
    return rec


def save_record(out: Path, item: Item, fit_key: str, mask_path: Path, hue: dict) -> dict:
    """Record one finished item (after its mask is on disk), so an interrupted run keeps it."""
    rec = {"name": item.name, "kind": item.kind, "image": str(item.path), "key": item.key, "fit_key": fit_key,
           "mask": str(mask_path.relative_to(out)), **{k: (None if isinstance(v, float) and np.isnan(v) else v)
                                                        for k, v in hue.items()}}
    write_json_atomic(record_path(out, item), rec)
    return rec


def drop_stale(out: Path, keep: set[str]) -> list[str]:
    """Remove masks and records of items that are now labelled or gone (only files this command wrote)."""
    gone = []
    for rec in sorted((out / STATE / "items").glob("*.json")):
        if rec.stem in keep:
            continue
        try:
            mask = out / json.loads(rec.read_text()).get("mask", "\0")
        except (OSError, ValueError):
            mask = None
        if mask is not None and mask.is_file():
            mask.unlink()
        rec.unlink()
        gone.append(rec.stem)
    return gone


def uncertainty_table(records: list[dict], batch: int) -> pd.DataFrame:
    """One row per predicted item, most uncertain first (ties by name), with its HUE parts and whether it is
    queued for correction."""
    df = pd.DataFrame(records, columns=["name", "kind", "u", "box_iou", "entropy", "empty_mask", "mask", "image"])
    df = df.sort_values(["u", "name"], ascending=[False, True], kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    df["queued"] = df["rank"] <= batch
    return df


def write_tables(out: Path, table: pd.DataFrame, folder: Path) -> None:
    """uncertainty.csv and to_annotate.txt (the queued items' image paths relative to the collection folder)."""
    write_text_atomic(out / "uncertainty.csv", table.to_csv(index=False, float_format="%.6g"))
    lines = []
    for p in table[table.queued].image:
        try:
            lines.append(str(Path(p).relative_to(folder)))
        except ValueError:
            lines.append(str(p))
    write_text_atomic(out / "to_annotate.txt", "".join(f"{line}\n" for line in lines))


def read_rounds(out: Path) -> list[dict]:
    """The rounds recorded so far (empty before the first finished run)."""
    path = out / "rounds.json"
    return json.loads(path.read_text())["rounds"] if path.is_file() else []


def record_round(out: Path, labelled: list[str], fit, queued: list[str], n_predicted: int) -> tuple[dict, dict | None]:
    """Add this run's round to rounds.json, or replace the last one when the labels are the same (a rerun or a
    resumed run); returns (this round, the previous round or None)."""
    rounds = read_rounds(out)
    same = bool(rounds) and sorted(rounds[-1]["labelled"]) == sorted(labelled)
    prev = (rounds[-2] if len(rounds) > 1 else None) if same else (rounds[-1] if rounds else None)
    entry = {"round": rounds[-1]["round"] if same else len(rounds) + 1, "labels": len(labelled),
             "labelled": sorted(labelled), "label_cases": fit.n_labels, "cv_dice": fit.cv_dice, "cv_sd": fit.cv_sd,
             "chosen": fit.route, "queued": queued, "predicted": n_predicted,
             "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    rounds = (rounds[:-1] if same else rounds) + [entry]
    write_json_atomic(out / "rounds.json", {"rounds": rounds})
    return entry, prev
