"""The volume prior: what the labelled train volumes say about the organ in 3D (its range along the slices, its
length, a box per position along the body, its area and box along the organ, its grey level, a location atlas).
Positions live in each volume's body frame (:mod:`.body`: in-plane relative to the slice's body box, along the
slices relative to the body's slice range, lengths in mm), found from the image alone, so the prior transfers
between scans of different fields of view. Nothing in it ever sees a test mask."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ...boxes import mask_to_box
from ...errors import ConfigError
from ...localizers.base import check_support
from ..prior import ATLAS_SIDE, DomainPrior, grey, resize_linear, resize_nearest
from .body import BodyFrame

N_Z_BINS = 16
N_T_BINS = 10


def _depth(case) -> int:
    """Depth of the volume a slice case came from (``meta['depth']``, set by Volume.slice_case)."""
    d = (case.meta or {}).get("depth")
    if d is None or case.slice_index is None or case.volume_id is None:
        raise ConfigError(f"{case.case_id}: a volume prior needs slice cases with volume_id, slice_index and "
                          "meta['depth'] (use Volume.slice_case)")
    return int(d)


def _fill_nan_rows(a: np.ndarray) -> np.ndarray:
    """Rows of NaN take the nearest filled row (by index)."""
    ok = np.flatnonzero(~np.isnan(a).any(1))
    if ok.size == 0:
        return a
    idx = ok[np.argmin(np.abs(np.arange(len(a))[:, None] - ok[None]), 1)]
    return a[idx]


def _body_crop(mask: np.ndarray, frame: BodyFrame, z: int) -> np.ndarray:
    """The slice's mask inside its body box, on the atlas grid."""
    b = np.round(frame.boxes[z]).astype(int)
    return resize_nearest(mask[b[1]:b[3] + 1, b[0]:b[2] + 1], (ATLAS_SIDE, ATLAS_SIDE)).astype(np.float32)


def censored(zs, depth: int) -> tuple[bool, bool]:
    """Whether a labelled organ may run past the volume's first / last slice: the unlabelled slices between its
    labelled ones and that edge are fewer than the draw's largest step between labelled slices (so the organ may
    run on into them, and past the field of view; with every organ slice labelled: it touches the edge)."""
    zs = np.sort(np.asarray(zs, int))
    gap = int(np.diff(zs).max()) if len(zs) > 1 else 1
    return bool(zs[0] < gap), bool(depth - 1 - zs[-1] < gap)


def frames_of(volumes: dict) -> dict:
    """{volume id: BodyFrame} of train ``volumes`` ({id: Volume}); the frame of a volume is computed once."""
    out = {}
    for vid, v in volumes.items():
        out[vid] = v if isinstance(v, BodyFrame) else BodyFrame.of(v.image, float(v.spacing[2]))
    return out


@dataclass
class VolumePrior:
    """What the labelled train volumes say about the organ in 3D; nothing in it ever sees a test mask."""

    z_range: tuple[float, float]     # along the body's slice range (0 = first body slice, 1 = last) of any organ;
                                     # an end every organ may run past (censored) is the body's end
    length: tuple[float, float]      # min organ length and max uncensored organ length, mm (inf: all were cut)
    z_boxes: np.ndarray              # (N_Z_BINS, 4) mean body-coordinate box per bin of the body's slice range
    t_area: np.ndarray               # (N_T_BINS,) mean area relative to the volume's largest, by position t
    t_box: np.ndarray                # (N_T_BINS, 4) mean body-coordinate box by position t along the organ
    fg_grey: float                   # mean and sd of the organ's grey level as a rank among its volume's body voxels
    fg_grey_sd: float                # (BodyFrame.rank; the gate's tissue cue)
    domain: DomainPrior              # colour and area of the slices (2D gate cues)
    n_volumes: int
    extents: dict = field(default_factory=dict)   # train volume id -> (first, last) organ slice
    atlas: np.ndarray | None = None  # (ATLAS_SIDE, ATLAS_SIDE) mean mask in body coordinates

    def position(self, case) -> float:
        """Position t in [0, 1] of a labelled train slice along its own organ (0.5 if its volume is unknown)."""
        z0, z1 = self.extents.get(case.volume_id, (None, None))
        return 0.5 if z0 is None else float((case.slice_index - z0) / max(z1 - z0, 1))

    @classmethod
    def fit(cls, cases, frames: dict) -> "VolumePrior":
        """From labelled slices of train volumes (foreground slices; empty ones are skipped) and the body frames
        of their volumes (``frames``: {volume id: BodyFrame}, or {volume id: Volume}; :func:`frames_of`)."""
        cases, _ = check_support(cases, None, "volume prior")
        by_vol = defaultdict(list)
        for c in cases:
            by_vol[c.volume_id].append(c)
        missing = sorted(set(by_vol) - set(frames or {}))
        if missing:
            raise ConfigError(f"volume prior: no body frame for train volume(s) {missing}; pass frames={{volume id: "
                              "Volume or BodyFrame} for every volume the labelled slices come from")
        frames = frames_of({v: frames[v] for v in by_vol})
        zb, tb = [[] for _ in range(N_Z_BINS)], [[] for _ in range(N_T_BINS)]
        ta = [[] for _ in range(N_T_BINS)]
        lo, hi, lengths, whole, extents, crops, cuts = [], [], [], [], {}, [], []
        for vid, cs in by_vol.items():
            fr, depth = frames[vid], _depth(cs[0])
            if fr.depth != depth:
                raise ConfigError(f"volume prior: the body frame of {vid} has {fr.depth} slices, its slices say "
                                  f"{depth}; pass the frame of the volume the slices come from")
            zs = np.array([c.slice_index for c in cs])
            z0, z1 = int(zs.min()), int(zs.max())
            cut = censored(zs, depth)
            cuts.append(cut)
            extents[vid] = (z0, z1)
            lo.append(float(fr.t(z0)))
            hi.append(float(fr.t(z1)))
            lengths.append((z1 - z0) * fr.z_spacing)
            if not any(cut):
                whole.append(lengths[-1])
            amax = max(c.mask.mean() for c in cs)
            for c in cs:
                z = c.slice_index
                b = fr.to_body(mask_to_box(c.mask), z)
                zb[int(np.clip(fr.t(z) * N_Z_BINS, 0, N_Z_BINS - 1))].append(b)
                k = min(int((z - z0) / max(z1 - z0, 1) * N_T_BINS), N_T_BINS - 1)
                tb[k].append(b)
                ta[k].append(c.mask.mean() / amax)
                crops.append(_body_crop(c.mask, fr, z))
        mean_rows = lambda bins: np.array([np.mean(b, 0) if b else [np.nan] * 4 for b in bins])  # noqa: E731
        g = np.concatenate([frames[c.volume_id].rank(grey(c.image)[c.mask]) for c in cases])
        # an end that every train organ may run past (cut by its field of view) is no bound: the body's own end
        if all(c[0] for c in cuts):
            lo.append(0.0)
        if all(c[1] for c in cuts):
            hi.append(1.0)
        return cls(z_range=(float(min(lo)), float(max(hi))),
                   length=(float(min(lengths)), float(max(whole)) if whole else float("inf")),
                   z_boxes=_fill_nan_rows(mean_rows(zb)), t_box=_fill_nan_rows(mean_rows(tb)),
                   t_area=_fill_nan_rows(np.array([[np.mean(a)] if a else [np.nan] for a in ta]))[:, 0],
                   fg_grey=float(g.mean()), fg_grey_sd=float(max(g.std(), 0.01)), domain=DomainPrior.fit(cases),
                   n_volumes=len(by_vol), extents=extents, atlas=np.mean(crops, 0))

    def slice_range(self, frame: BodyFrame, margin: int = 1) -> list[int]:
        """Slices of a volume (its body ``frame``) to process: the prior's range plus ``margin`` slices each side."""
        a = int(np.floor(frame.z_at(self.z_range[0]))) - margin
        b = int(np.ceil(frame.z_at(self.z_range[1]))) + margin
        return list(range(max(a, 0), min(b, frame.depth - 1) + 1))

    def box_at(self, z: int, frame: BodyFrame) -> np.ndarray:
        """The volume-prior box of slice ``z`` of a volume with body ``frame`` (xyxy pixels)."""
        b = self.z_boxes[int(np.clip(frame.t(z) * N_Z_BINS, 0, N_Z_BINS - 1))]
        return frame.to_pixels(b, z)

    def t_box_at(self, t: float, z: int, frame: BodyFrame) -> tuple[float, float]:
        """(width, height) in pixels of slice ``z`` of the mean organ box at position ``t`` along the organ."""
        b = self.t_box[min(int(max(t, 0.0) * N_T_BINS), N_T_BINS - 1)]
        w, h = frame.size(z)
        return float((b[2] - b[0]) * w), float((b[3] - b[1]) * h)

    def max_slices(self, z_spacing: float) -> float:
        """The longest uncensored train organ in slices of ``z_spacing`` mm (inf when every one was cut)."""
        return self.length[1] / max(float(z_spacing), 1e-6)

    def atlas_at(self, z: int, frame: BodyFrame) -> np.ndarray:
        """The body-coordinate atlas placed in slice ``z``'s body box (zero outside it)."""
        out = np.zeros(frame.shape, np.float32)
        b = np.round(frame.boxes[z]).astype(int)
        out[b[1]:b[3] + 1, b[0]:b[2] + 1] = resize_linear(self.atlas, (b[3] - b[1] + 1, b[2] - b[0] + 1))
        return out

    def area_profile(self, t: np.ndarray) -> np.ndarray:
        """Relative area at positions ``t`` in [0, 1] along the organ (0 outside)."""
        t = np.asarray(t, float)
        centres = (np.arange(N_T_BINS) + 0.5) / N_T_BINS
        prof = np.interp(t, np.r_[0.0, centres, 1.0], np.r_[self.t_area[0] * 0.5, self.t_area, self.t_area[-1] * 0.5])
        return np.where((t >= 0) & (t <= 1), prof, 0.0)
