"""The volume prior: what the labelled train volumes say about the organ in 3D (its z-range, length, a box per
normalised z, its area and box along the organ, its grey level). Nothing in it ever sees a test mask."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ...boxes import clip_box, mask_to_box
from ...errors import ConfigError
from ...localizers.base import check_support
from ..prior import DomainPrior, grey

N_Z_BINS = 16
N_T_BINS = 10


def _depth(case) -> int:
    """Depth of the volume a slice case came from (``meta['depth']``, set by Volume.slice_case)."""
    d = (case.meta or {}).get("depth")
    if d is None or case.slice_index is None or case.volume_id is None:
        raise ConfigError(f"{case.case_id}: a volume prior needs slice cases with volume_id, slice_index and "
                          "meta['depth'] (use Volume.slice_case)")
    return int(d)


def _norm_box(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    return mask_to_box(mask) / np.array([w - 1, h - 1, w - 1, h - 1], float)


def _fill_nan_rows(a: np.ndarray) -> np.ndarray:
    """Rows of NaN take the nearest filled row (by index)."""
    ok = np.flatnonzero(~np.isnan(a).any(1))
    if ok.size == 0:
        return a
    idx = ok[np.argmin(np.abs(np.arange(len(a))[:, None] - ok[None]), 1)]
    return a[idx]


@dataclass
class VolumePrior:
    """What the labelled train volumes say about the organ in 3D; nothing in it ever sees a test mask."""

    z_range: tuple[float, float]     # normalised z (0 = first slice, 1 = last) spanned by any train organ
    length: tuple[float, float]      # min and max normalised organ length along z
    z_boxes: np.ndarray              # (N_Z_BINS, 4) mean normalised box per normalised-z bin
    t_area: np.ndarray               # (N_T_BINS,) mean area relative to the volume's largest, by position t
    t_box: np.ndarray                # (N_T_BINS, 4) mean normalised box by position t along the organ
    fg_grey: float                   # mean and sd of the grey level inside the organ (the gate's tissue cue)
    fg_grey_sd: float
    domain: DomainPrior              # atlas, colour and area of the slices (2D gate cues)
    n_volumes: int
    extents: dict = field(default_factory=dict)   # train volume id -> (first, last) organ slice

    def position(self, case) -> float:
        """Position t in [0, 1] of a labelled train slice along its own organ (0.5 if its volume is unknown)."""
        z0, z1 = self.extents.get(case.volume_id, (None, None))
        return 0.5 if z0 is None else float((case.slice_index - z0) / max(z1 - z0, 1))

    @classmethod
    def fit(cls, cases) -> "VolumePrior":
        """From labelled slices of train volumes (foreground slices; empty ones are skipped)."""
        cases, _ = check_support(cases, None, "volume prior")
        by_vol = defaultdict(list)
        for c in cases:
            by_vol[c.volume_id].append(c)
        zb, tb = [[] for _ in range(N_Z_BINS)], [[] for _ in range(N_T_BINS)]
        ta = [[] for _ in range(N_T_BINS)]
        lo, hi, lengths, extents = [], [], [], {}
        for vid, cs in by_vol.items():
            depth = _depth(cs[0])
            zs = np.array([c.slice_index for c in cs])
            z0, z1 = int(zs.min()), int(zs.max())
            extents[vid] = (z0, z1)
            lo.append(z0 / (depth - 1))
            hi.append(z1 / (depth - 1))
            lengths.append((z1 - z0) / (depth - 1))
            amax = max(c.mask.mean() for c in cs)
            for c in cs:
                nz = c.slice_index / (depth - 1)
                t = (c.slice_index - z0) / max(z1 - z0, 1)
                b = _norm_box(c.mask)
                zb[min(int(nz * N_Z_BINS), N_Z_BINS - 1)].append(b)
                k = min(int(t * N_T_BINS), N_T_BINS - 1)
                tb[k].append(b)
                ta[k].append(c.mask.mean() / amax)
        mean_rows = lambda bins: np.array([np.mean(b, 0) if b else [np.nan] * 4 for b in bins])  # noqa: E731
        g = np.concatenate([grey(c.image)[c.mask] for c in cases])
        return cls(z_range=(float(min(lo)), float(max(hi))), length=(float(min(lengths)), float(max(lengths))),
                   z_boxes=_fill_nan_rows(mean_rows(zb)), t_box=_fill_nan_rows(mean_rows(tb)),
                   t_area=_fill_nan_rows(np.array([[np.mean(a)] if a else [np.nan] for a in ta]))[:, 0],
                   fg_grey=float(g.mean()), fg_grey_sd=float(max(g.std(), 2.0)), domain=DomainPrior.fit(cases),
                   n_volumes=len(by_vol), extents=extents)

    def slice_range(self, depth: int, margin: int = 1) -> list[int]:
        """Slices of a volume of ``depth`` to process: the prior's z-range plus ``margin`` slices each side."""
        a = int(np.floor(self.z_range[0] * (depth - 1))) - margin
        b = int(np.ceil(self.z_range[1] * (depth - 1))) + margin
        return list(range(max(a, 0), min(b, depth - 1) + 1))

    def box_at(self, z: int, depth: int, shape: tuple[int, int]) -> np.ndarray:
        """The volume-prior box of slice ``z`` (xyxy pixels)."""
        nz = z / max(depth - 1, 1)
        b = self.z_boxes[min(int(nz * N_Z_BINS), N_Z_BINS - 1)]
        h, w = shape
        return clip_box(b * np.array([w - 1, h - 1, w - 1, h - 1]), shape)

    def area_profile(self, t: np.ndarray) -> np.ndarray:
        """Relative area at positions ``t`` in [0, 1] along the organ (0 outside)."""
        t = np.asarray(t, float)
        centres = (np.arange(N_T_BINS) + 0.5) / N_T_BINS
        prof = np.interp(t, np.r_[0.0, centres, 1.0], np.r_[self.t_area[0] * 0.5, self.t_area, self.t_area[-1] * 0.5])
        return np.where((t >= 0) & (t <= 1), prof, 0.0)
