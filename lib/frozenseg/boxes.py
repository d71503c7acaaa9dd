"""Boxes in original pixel coordinates, xyxy (x0, y0, x1, y1), and the perturbations of the oracle study."""
from __future__ import annotations

import numpy as np

from .errors import DataError


def mask_to_box(mask: np.ndarray, name: str | None = None) -> np.ndarray:
    """Tight box around a mask's foreground; an empty mask has no box (DataError naming the case)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise DataError(name, "mask is empty, so it has no ground-truth box",
                        "exclude empty cases from box-prompted scoring (they are flagged in the results)")
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)


def clip_box(box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Clip a box to the image and keep x0 <= x1, y0 <= y1."""
    h, w = shape[:2]
    b = np.asarray(box, dtype=np.float64).copy()
    b[[0, 2]] = np.clip(b[[0, 2]], 0, w - 1)
    b[[1, 3]] = np.clip(b[[1, 3]], 0, h - 1)
    b[0], b[2] = min(b[0], b[2]), max(b[0], b[2])
    b[1], b[3] = min(b[1], b[3]), max(b[1], b[3])
    return b


def loosen_box(box: np.ndarray, factor: float, shape: tuple[int, int]) -> np.ndarray:
    """Scale a box's width and height by ``factor`` about its centre (1.0 = unchanged), clipped to the image."""
    b = np.asarray(box, dtype=np.float64)
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    hw, hh = (b[2] - b[0]) / 2 * factor, (b[3] - b[1]) / 2 * factor
    return clip_box(np.array([cx - hw, cy - hh, cx + hw, cy + hh]), shape)


def jitter_box(box: np.ndarray, frac: float, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Move each edge by a uniform offset of up to ``frac`` of the box's side (the localization-error model)."""
    b = np.asarray(box, dtype=np.float64)
    w, h = b[2] - b[0] + 1, b[3] - b[1] + 1
    off = rng.uniform(-frac, frac, size=4) * np.array([w, h, w, h])
    return clip_box(b + off, shape)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes (inclusive pixel coordinates)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))
