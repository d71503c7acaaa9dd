"""What a pipeline learns from a few labelled cases without any gradient: a location atlas, a colour model and
the target's size. Skills and gates read it; nothing in it ever sees a test mask."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..localizers.base import check_support

ATLAS_SIDE = 64
COLOUR_BINS = 16


def resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2D array to ``shape`` (index sampling, no interpolation)."""
    h, w = mask.shape
    ys = (np.arange(shape[0]) * h / shape[0]).astype(int)
    xs = (np.arange(shape[1]) * w / shape[1]).astype(int)
    return mask[np.ix_(ys, xs)]


def resize_linear(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float 2D array to ``shape``."""
    zoom = (shape[0] / a.shape[0], shape[1] / a.shape[1])
    out = ndimage.zoom(a.astype(np.float32), zoom, order=1, mode="nearest")
    return out[: shape[0], : shape[1]]


def colour_index(image: np.ndarray) -> np.ndarray:
    """Per-pixel index into a COLOUR_BINS^3 RGB histogram."""
    q = (image.astype(np.int32) * COLOUR_BINS) // 256
    return (q[..., 0] * COLOUR_BINS + q[..., 1]) * COLOUR_BINS + q[..., 2]


def grey(image: np.ndarray) -> np.ndarray:
    """Mean of the three channels, float in [0, 255]."""
    return image.astype(np.float32).mean(-1)


@dataclass
class DomainPrior:
    """Atlas (mean support mask on a 64x64 normalised grid), colour log-odds table and log-area statistics."""

    atlas: np.ndarray            # (64, 64) float in [0, 1]
    colour_logodds: np.ndarray   # (COLOUR_BINS**3,) log p(colour|fg) - log p(colour|bg), smoothed
    log_area_mean: float         # mean of log(mask area / image area)
    log_area_sd: float
    fg_grey: float               # mean grey level inside support masks
    bg_grey: float
    n_support: int

    @classmethod
    def fit(cls, cases) -> "DomainPrior":
        """Learn the prior from labelled cases (empty masks are skipped; none left is a clear error)."""
        cases, _ = check_support(cases, None, "domain prior")
        atlas = np.mean([resize_nearest(c.mask, (ATLAS_SIDE, ATLAS_SIDE)).astype(np.float32) for c in cases], 0)
        n = COLOUR_BINS ** 3
        fg, bg = np.ones(n), np.ones(n)          # Laplace smoothing
        fg_grey, bg_grey, areas = [], [], []
        for c in cases:
            idx = colour_index(c.image)
            fg += np.bincount(idx[c.mask], minlength=n)
            bg += np.bincount(idx[~c.mask], minlength=n)
            g = grey(c.image)
            fg_grey.append(g[c.mask].mean())
            bg_grey.append(g[~c.mask].mean() if (~c.mask).any() else np.nan)
            areas.append(np.log(c.mask.mean()))
        logodds = np.log(fg / fg.sum()) - np.log(bg / bg.sum())
        return cls(atlas=atlas, colour_logodds=logodds.astype(np.float32),
                   log_area_mean=float(np.mean(areas)), log_area_sd=float(max(np.std(areas), 0.1)),
                   fg_grey=float(np.mean(fg_grey)), bg_grey=float(np.nanmean(bg_grey)), n_support=len(cases))

    def atlas_at(self, shape: tuple[int, int]) -> np.ndarray:
        """The atlas resized to an image of ``shape``."""
        return resize_linear(self.atlas, shape)

    def fg_probability(self, image: np.ndarray) -> np.ndarray:
        """Per-pixel p(foreground | colour) with equal class priors."""
        return 1.0 / (1.0 + np.exp(-self.colour_logodds[colour_index(image)]))

    def area_score(self, mask: np.ndarray) -> float:
        """exp(-z^2 / 2) of the mask's log-area fraction under the support distribution (0 for an empty mask)."""
        if not mask.any():
            return 0.0
        z = (np.log(mask.mean()) - self.log_area_mean) / self.log_area_sd
        return float(np.exp(-0.5 * z * z))

    def atlas_box(self, shape: tuple[int, int], level: float = 0.5) -> np.ndarray | None:
        """Box of the atlas region above ``level`` (of its maximum) scaled to ``shape``; a GT-free fallback box."""
        a = self.atlas_at(shape)
        region = a >= level * a.max() if a.max() > 0 else None
        if region is None or not region.any():
            return None
        ys, xs = np.nonzero(region)
        return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)
