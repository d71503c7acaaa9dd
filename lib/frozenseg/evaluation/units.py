"""The test units of a domain, and a prediction scored against its ground truth where that lives.

* Test units: a 2D domain's fixed test split, images without a target (negatives) included; a volume domain's
  whole test volumes, every slice of each (organ-free ones included), scored per volume in 3D.
* Native resolution: a real case shrunk at load is scored against its mask read at the file's own size
  (:func:`frozenseg.data.native.native_mask`), the prediction upsampled to it (bilinear on the binary mask,
  threshold at one half); HD95 is in mm where the file has a spacing (NIfTI), else in native pixels.
* The empty-mask rule is :data:`frozenseg.evaluation.metrics.EMPTY_RULE`.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..data.native import is_shrunk, native_mask
from ..data.types import Case, DomainData, Volume
from ..errors import DataError
from .metrics import assemble_volume, score, score_volume as _score_volume


def test_units(data: DomainData, n_test: int | None = None) -> list[Case]:
    """The test cases every method predicts: the fixed test split, cut to its first ``n_test`` units when set.
    2D: every test image, negatives (images without a target) included; volume domains: whole test volumes,
    each with every one of its slices, scored per volume."""
    if not data.volumes:
        return list(data.test) if n_test is None else list(data.test[: int(n_test)])
    if n_test is None:
        return list(data.test)
    keep = set(list(dict.fromkeys(c.volume_id for c in data.test))[: max(1, int(n_test))])
    return [c for c in data.test if c.volume_id in keep]


def negatives(cases: list[Case], volumes: dict | None = None) -> int:
    """How many test units hold no target: 2D cases with an empty mask, or test volumes with no organ voxel."""
    if volumes:
        ids = dict.fromkeys(c.volume_id for c in cases if c.volume_id)
        return sum(not volumes[v].mask.any() for v in ids)
    return sum(not c.mask.any() for c in cases)


def upsample(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A binary mask resized to (rows, cols): bilinear on 0/255, foreground at half or more (unchanged if equal)."""
    pred = np.asarray(pred, bool)
    if pred.shape == tuple(size):
        return pred
    if pred.ndim != 2:
        raise DataError(None, f"prediction of shape {pred.shape} is not a 2D mask", "predict one mask per image")
    img = Image.fromarray(pred.astype(np.uint8) * 255).resize((int(size[1]), int(size[0])), Image.BILINEAR)
    return np.asarray(img) >= 128


def score_case(pred: np.ndarray, case: Case, with_hd95: bool = True) -> dict:
    """Dice, IoU (and HD95) of one 2D prediction at the case's native resolution; ``hd95_unit`` says mm or px and
    ``negative`` whether the case has no target."""
    pred = np.asarray(pred, bool)
    if pred.shape != case.mask.shape:
        raise DataError(case.case_id, f"prediction shape {pred.shape} differs from the loaded mask {case.mask.shape}",
                        "predict at the size the case was loaded at; scoring upsamples it to the file's size")
    gt = native_mask(case) if is_shrunk(case) else case.mask
    out = score(upsample(pred, gt.shape), gt, case.spacing, with_hd95)
    out.update(negative=not bool(gt.any()), hd95_unit="mm" if case.spacing is not None else "px")
    return out


def score_volume(pred: np.ndarray, volume: Volume, with_hd95: bool = True) -> dict:
    """3D Dice, IoU (and HD95 in mm) of one whole volume, every slice counted once, with slices scored, organ-free
    slices and false-positive slices."""
    out = _score_volume(pred, volume.mask, volume.spacing, with_hd95)
    out.update(negative=not bool(volume.mask.any()), hd95_unit="mm")
    return out


def volume_rows(slice_preds: dict, volumes: dict, with_hd95: bool = True) -> list[dict]:
    """One 3D row per volume from per-slice predictions ``{volume_id: {z: mask}}`` (slices not predicted are
    empty), in volume-id order."""
    rows = []
    for vid in sorted(slice_preds):
        vol = volumes[vid]
        pred = assemble_volume(vol.mask.shape, slice_preds[vid])
        rows.append({"unit": "volume", "case_id": vid, "volume_id": vid, **score_volume(pred, vol, with_hd95)})
    return rows


def unit_rows(cases: list[Case], preds: list[np.ndarray], volumes: dict | None = None, with_hd95: bool = True,
              slices: bool = False) -> list[dict]:
    """Scored rows of predictions for test cases: one per 2D case (unit 'case'); for slices of ``volumes`` one 3D
    row per volume (unit 'volume') and, with ``slices``, a diagnostic row per slice (unit 'slice', never counted
    in tables). Each row has ``index``, the position of its case in ``cases`` (None for volumes)."""
    if len(cases) != len(preds):
        raise DataError(None, f"{len(preds)} predictions for {len(cases)} cases", "predict every test case once")
    rows, by_vol = [], {}
    for i, (c, p) in enumerate(zip(cases, preds)):
        if volumes and c.volume_id in volumes:
            by_vol.setdefault(c.volume_id, {})[int(c.slice_index)] = np.asarray(p, bool)
            if slices:
                rows.append({"index": i, "unit": "slice", "case_id": c.case_id, "volume_id": c.volume_id,
                             "slice_index": c.slice_index, **score_case(p, c, with_hd95=False)})
        else:
            rows.append({"index": i, "unit": "case", "case_id": c.case_id, "volume_id": c.volume_id,
                         **score_case(p, c, with_hd95)})
    return rows + [{"index": None, **r} for r in volume_rows(by_vol, volumes or {}, with_hd95)]
