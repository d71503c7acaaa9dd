"""Dice, IoU and HD95 per case, and per-volume 3D scores (never an average over slices).

HD95 follows MONAI's ``compute_hausdorff_distance`` definition exactly (edges = mask XOR its binary erosion;
Euclidean distance from every edge pixel of one mask to the nearest edge pixel of the other, in mm when spacing
is given; the larger of the two directed 95th percentiles). It is computed here with scipy (binary erosion and a
KD-tree) because importing MONAI would slow every notebook kernel's start; tests/test_metrics.py checks parity with
MONAI itself on random 2D and 3D masks with and without spacing.
Conventions (the empty-mask rule, :data:`EMPTY_RULE`): both masks empty -> Dice = IoU = 1 and HD95 = 0; exactly one
empty -> Dice = IoU = 0 and HD95 = NaN (no boundary to measure; summaries count such units instead of inventing a
distance).
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError

EMPTY_RULE = ("a unit without a target (a negative) scores Dice 1 when nothing is predicted and 0 when anything "
              "is, so a false positive on it counts in full")


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and cast to bool."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise DataError(None, f"prediction shape {pred.shape} differs from ground truth {gt.shape}",
                        "resize the prediction to the image size before scoring")
    return pred.astype(bool), gt.astype(bool)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A| + |B|)."""
    p, g = _pair(pred, gt)
    s = p.sum() + g.sum()
    return 1.0 if s == 0 else float(2.0 * np.logical_and(p, g).sum() / s)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union."""
    p, g = _pair(pred, gt)
    u = np.logical_or(p, g).sum()
    return 1.0 if u == 0 else float(np.logical_and(p, g).sum() / u)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing=None) -> float:
    """95th-percentile symmetric Hausdorff distance (pixels, or mm with ``spacing``); MONAI's definition."""
    from scipy.ndimage import binary_erosion
    from scipy.spatial import KDTree

    p, g = _pair(pred, gt)
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return float("nan")
    p, g = _crop_to_union(p, g)
    scale = np.ones(p.ndim) if spacing is None else np.asarray([float(s) for s in spacing], dtype=np.float64)
    if scale.shape != (p.ndim,):
        raise DataError(None, f"spacing {tuple(spacing)} has {scale.size} entries for a {p.ndim}D mask",
                        "pass one spacing value per mask axis (mm)")
    edge_p = np.argwhere(p ^ binary_erosion(p)) * scale
    edge_g = np.argwhere(g ^ binary_erosion(g)) * scale
    d_pg = KDTree(edge_g, leafsize=32).query(edge_p, k=1)[0]
    d_gp = KDTree(edge_p, leafsize=32).query(edge_g, k=1)[0]
    return float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))


def _crop_to_union(p: np.ndarray, g: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to their union's bounding box plus a background margin (distances are unchanged)."""
    idx = np.nonzero(p | g)
    sl = tuple(slice(max(int(i.min()) - margin, 0), int(i.max()) + margin + 1) for i in idx)
    return np.ascontiguousarray(p[sl]), np.ascontiguousarray(g[sl])


def score(pred: np.ndarray, gt: np.ndarray, spacing=None, with_hd95: bool = True) -> dict[str, float]:
    """Dice, IoU and (optionally) HD95 of one case or one volume."""
    out = {"dice": dice(pred, gt), "iou": iou(pred, gt)}
    if with_hd95:
        out["hd95"] = hd95(pred, gt, spacing)
    return out


def assemble_volume(shape: tuple[int, int, int], slices: dict[int, np.ndarray]) -> np.ndarray:
    """Stack per-slice predictions into an (H, W, D) volume; slices not predicted are empty."""
    vol = np.zeros(shape, dtype=bool)
    for z, m in slices.items():
        if m.shape != shape[:2]:
            raise DataError(None, f"slice {z} prediction is {m.shape}, volume slices are {shape[:2]}",
                            "predict at the slice's original size")
        vol[:, :, z] = m
    return vol


def score_volume(pred_vol: np.ndarray, gt_vol: np.ndarray, spacing=None, with_hd95: bool = True) -> dict[str, float]:
    """3D Dice, IoU and HD95 (mm with spacing) of one volume: every voxel of every slice counts once. Also the
    number of slices scored and of organ-free slices where something was predicted (false-positive slices)."""
    if pred_vol.ndim != 3:
        raise DataError(None, f"expected an (H, W, D) volume, got {pred_vol.shape}", "use assemble_volume first")
    out = score(pred_vol, gt_vol, spacing, with_hd95)
    empty = ~np.asarray(gt_vol, bool).any(axis=(0, 1))
    fp = np.asarray(pred_vol, bool).any(axis=(0, 1)) & empty
    return {**out, "slices_scored": int(pred_vol.shape[2]), "empty_slices": int(empty.sum()), "fp_slices": int(fp.sum())}
