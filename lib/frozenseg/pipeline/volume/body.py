"""The body frame of a volume, found from the image alone (no label): per slice the body (the largest connected
component above an intensity-relative threshold, holes filled) and its bounding box, and the slices the body spans.
The volume prior lives in this frame (in-plane positions relative to the slice's body box, the slice axis relative
to the body's slice range, lengths in mm), so that a prior fit on scans of one field of view transfers to another.

The threshold is relative to the volume's own intensities (:func:`body_threshold`, from Otsu levels of the volume's
histogram), so it holds for windowed CT, where air is 0, and for MR normalised per
volume alike; it never reads Hounsfield units."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ...boxes import clip_box
from ...errors import DataError

BODY_SLICE_FRAC = 0.1      # a slice is in the body's range when its body area is at least this share of the largest
SMOOTH_SLICES = 5          # running median of the per-slice body boxes along z (stray components, arms)


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of uint8 ``values`` (the level that best splits them into two classes; the middle of the
    best levels where several split alike, e.g. an empty gap between the classes)."""
    h = np.bincount(np.asarray(values, np.uint8).ravel(), minlength=256).astype(float)
    p = h / max(h.sum(), 1.0)
    w = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * w - mu) ** 2 / (w * (1 - w))
    between[~np.isfinite(between)] = -1
    if between.max() <= 0:                      # one grey level only: nothing to split
        return float(np.argmax(h))
    return float(np.flatnonzero(between >= between.max() * (1 - 1e-9)).mean())


def body_threshold(image: np.ndarray) -> float:
    """Body vs background threshold of a volume: half of the Otsu level of its darker class (background against
    dim tissue), so fat and dim tissue count as body on CT and on MR; never below a tenth of the volume's own Otsu
    level nor within the background's noise (its most frequent level plus four spreads, the spread measured below
    that level), where the darker class is background alone."""
    img = np.asarray(image)
    t = otsu(img)
    low = img[img <= t]
    if not low.size:
        return max(0.5 * t, 1.0)
    mode = int(np.argmax(np.bincount(low.ravel())))
    below = low[low <= mode].astype(float)
    noise = mode + 4 * float(np.sqrt(np.mean((below - mode) ** 2)))
    return max(0.5 * otsu(low), 0.1 * t, noise, 1.0)


def body_slice(grey: np.ndarray, threshold: float) -> np.ndarray:
    """The body on one slice: largest component of ``grey > threshold`` after a small opening, holes filled."""
    fg = ndimage.binary_opening(grey > threshold, iterations=1)
    lab, n = ndimage.label(fg)
    if n == 0:
        return fg
    big = lab == (int(np.argmax(np.bincount(lab.ravel())[1:])) + 1)
    return ndimage.binary_fill_holes(big)


def ranks(hist: np.ndarray) -> np.ndarray:
    """Mid-rank in [0, 1] of each of the 256 grey levels under a histogram (the body's intensity distribution)."""
    h = np.asarray(hist, float)
    c = np.cumsum(h)
    return ((c - 0.5 * h) / max(c[-1], 1.0)).astype(np.float32)


@dataclass
class BodyFrame:
    """Per slice the body's box (xyxy pixels, rows = y), the body's slice range and the slice spacing (mm)."""

    boxes: np.ndarray            # (D, 4) body box per slice (smoothed; slices outside the range take the nearest)
    z0: int                      # first and last slice of the body's range
    z1: int
    shape: tuple[int, int]       # (H, W) of a slice
    z_spacing: float = 1.0
    levels: np.ndarray | None = None   # (256,) rank of each grey level among the body's voxels (0 darkest, 1 brightest)

    @classmethod
    def of(cls, image: np.ndarray, z_spacing: float = 1.0) -> "BodyFrame":
        """The body frame of an (H, W, D) grey volume (uint8)."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] < 1:
            raise DataError(None, f"a body frame needs an (H, W, D) volume, got {img.shape}", "pass Volume.image")
        t = body_threshold(img)
        depth = img.shape[2]
        areas, boxes = np.zeros(depth), np.full((depth, 4), np.nan)
        hist = np.zeros(256)
        for z in range(depth):
            b = body_slice(img[:, :, z], t)
            if b.any():
                ys, xs = np.nonzero(b)
                areas[z], boxes[z] = b.sum(), (xs.min(), ys.min(), xs.max(), ys.max())
                hist += np.bincount(img[:, :, z][b].astype(np.uint8), minlength=256)
        if not areas.any():           # nothing above the threshold: the whole image is the frame
            h, w = img.shape[:2]
            return cls(np.tile([0.0, 0.0, w - 1.0, h - 1.0], (depth, 1)), 0, depth - 1, img.shape[:2],
                       float(z_spacing), ranks(np.bincount(img.astype(np.uint8).ravel(), minlength=256)))
        inside = np.flatnonzero(areas >= BODY_SLICE_FRAC * areas.max())
        z0, z1 = int(inside[0]), int(inside[-1])
        ok = np.zeros(depth, bool)
        ok[z0:z1 + 1] = areas[z0:z1 + 1] >= BODY_SLICE_FRAC * areas.max()
        good = np.flatnonzero(ok)
        near = good[np.argmin(np.abs(np.arange(depth)[:, None] - good[None]), 1)]
        boxes = boxes[near]
        half = SMOOTH_SLICES // 2
        smooth = np.array([np.median(boxes[max(z - half, 0):z + half + 1], 0) for z in range(depth)])
        return cls(smooth, z0, z1, img.shape[:2], float(z_spacing), ranks(hist))

    @property
    def depth(self) -> int:
        """Slices in the volume."""
        return len(self.boxes)

    def rank(self, grey: np.ndarray) -> np.ndarray:
        """Grey levels (0-255) as ranks among the body's voxels: an intensity scale shared by CT of any contrast
        phase and MR normalised per volume."""
        return self.levels[np.clip(np.rint(grey), 0, 255).astype(np.intp)]

    def t(self, z) -> np.ndarray | float:
        """Position of slice(s) ``z`` along the body's range (0 = first body slice, 1 = last)."""
        return (np.asarray(z, float) - self.z0) / max(self.z1 - self.z0, 1)

    def z_at(self, t: float) -> float:
        """The slice at position ``t`` along the body's range (not rounded, not clipped)."""
        return self.z0 + float(t) * max(self.z1 - self.z0, 1)

    def size(self, z: int) -> tuple[float, float]:
        """(width, height) in pixels of the body box of slice ``z``."""
        b = self.boxes[z]
        return float(b[2] - b[0] + 1), float(b[3] - b[1] + 1)

    def to_body(self, box: np.ndarray, z: int) -> np.ndarray:
        """A pixel box (xyxy) of slice ``z`` in body coordinates (0 = the body box's left / top, 1 = right / bottom)."""
        b = self.boxes[z]
        w, h = self.size(z)
        return (np.asarray(box, float) - [b[0], b[1], b[0], b[1]]) / [w, h, w, h]

    def to_pixels(self, nbox: np.ndarray, z: int) -> np.ndarray:
        """A body-coordinate box of slice ``z`` in pixels (xyxy), clipped to the image."""
        b = self.boxes[z]
        w, h = self.size(z)
        return clip_box(np.asarray(nbox, float) * [w, h, w, h] + [b[0], b[1], b[0], b[1]], self.shape)
