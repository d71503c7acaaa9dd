"""GT-free mask-quality gates: a weighted mean of cues computed from the image, the mask and the few-shot prior,
and the one keep-best rule every skill's proposals go through (2D images and the slices of a volume alike).

Keep-best loops accept a candidate only if the gate improves; notebook 10 measures, per domain, whether the
gate ranks masks like the true Dice does (the source found it valid on CXR and spleen, not on ISIC or Kvasir).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..boxes import mask_to_box
from ..errors import ConfigError

CUES = ("pred_iou", "atlas", "colour", "area", "compact", "edge")
# Cues a frame may supply: ``tissue`` needs the organ's grey level from a volume prior (``frame.vprior``),
# ``trajectory`` the within-volume trajectory's expectation at the slice (``frame.expect``). Each counts only when
# the gate weights it and the frame supplies it.
OPTIONAL_CUES = ("tissue", "trajectory")
ALL_CUES = CUES + OPTIONAL_CUES


def window(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    """The bounding box of a non-empty mask grown by ``pad`` pixels on every side (clipped to the image): binary
    dilation or erosion of up to ``pad - 1`` iterations changes nothing outside it, so they run on this crop."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (slice(max(int(rows[0]) - pad, 0), int(rows[-1]) + pad + 1),
            slice(max(int(cols[0]) - pad, 0), int(cols[-1]) + pad + 1))


def ring(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` outside the mask (4-connected steps, as ``binary_dilation`` iterated)."""
    width = max(1, int(width))
    out = np.zeros(mask.shape, bool)
    if not mask.any():
        return out
    w = window(mask, width + 1)
    m = mask[w]
    out[w] = ndimage.binary_dilation(m, iterations=width) & ~m
    return out


def cue_values(frame, mask: np.ndarray, pred_iou: float) -> dict[str, float]:
    """Every cue in [0, 1] for one mask (all 0 for an empty mask)."""
    if not mask.any():
        return dict.fromkeys(CUES, 0.0)
    prior = frame.prior
    atlas = frame.atlas
    width = max(2, int(0.03 * max(mask.shape)))
    w = window(mask, width + 1)          # every cue below reads only the mask and the rings around it: crop once
    m, area = mask[w], float(mask.sum())
    inter = float((atlas[w] * m).sum())
    atlas_dice = 2 * inter / (float(atlas.sum()) + area + 1e-6)
    p = frame.fg_prob[w]
    out_ring = ndimage.binary_dilation(m, iterations=width) & ~m
    inside = float(p[m].mean())
    outside = float(p[out_ring].mean()) if out_ring.any() else 0.5
    lab, n = ndimage.label(m)
    largest = np.bincount(lab.ravel())[1:].max() / area if n else 0.0
    g = frame.grey[w]
    in_ring = m & ~ndimage.binary_erosion(m, iterations=width)
    edge = abs(float(g[in_ring].mean()) - float(g[out_ring].mean())) / 255.0 if in_ring.any() and out_ring.any() else 0.0
    return {"pred_iou": float(np.clip(pred_iou, 0, 1)) if np.isfinite(pred_iou) else 0.0,
            "atlas": atlas_dice,
            "colour": float(np.clip(0.5 + 0.5 * (inside - outside), 0, 1)),
            "area": prior.area_score(mask),
            "compact": float(largest),
            "edge": float(min(1.0, 4 * edge))}


def tissue_cue(frame, mask: np.ndarray) -> float:
    """Fraction of the mask at the organ's grey level (``frame.vprior``; on the frame's ``tissue_grey`` scale where it
    has one, e.g. ranks among the volume's body voxels), lowered by that fraction in a ring around it (in [0, 1])."""
    vp = frame.vprior
    inside = np.abs(getattr(frame, "tissue_grey", frame.grey) - vp.fg_grey) <= 2.5 * vp.fg_grey_sd
    r = ring(mask, max(2, int(0.02 * max(mask.shape))))
    fin = float(inside[mask].mean())
    fout = float(inside[r].mean()) if r.any() else 0.0
    return float(np.clip(fin * (1.0 - 0.5 * fout), 0, 1))


def trajectory_cue(frame, mask: np.ndarray) -> float:
    """How well the mask's centroid and area match the trajectory's expectation at this slice (``frame.expect``)."""
    e = frame.expect
    ys, xs = np.nonzero(mask)
    radius = max(np.sqrt(e["area"] / np.pi), 2.0)
    d = np.hypot(xs.mean() - e["cx"], ys.mean() - e["cy"]) / max(0.6 * radius, 3.0)
    la = np.log(mask.sum() / max(e["area"], 1.0)) / 0.5
    return float(np.exp(-0.5 * d * d) * np.exp(-0.5 * la * la))


OPTIONAL = {"tissue": (lambda frame: getattr(frame, "vprior", None) is not None, tissue_cue),
            "trajectory": (lambda frame: getattr(frame, "expect", None) is not None, trajectory_cue)}


@dataclass
class Gate:
    """score = sum(w_c * cue_c) / sum(w) over the cues present; weights default to equal over the image cues
    (:data:`CUES`). An optional cue (:data:`OPTIONAL_CUES`) is present when weighted and supplied by the frame."""

    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CUES, 1.0))

    def __post_init__(self):
        bad = set(self.weights) - set(ALL_CUES)
        if bad:
            raise ConfigError(f"unknown gate cue(s) {sorted(bad)}; choose from {list(ALL_CUES)}")
        if sum(max(0.0, w) for w in self.weights.values()) <= 0:
            raise ConfigError("gate weights must have a positive sum")

    def cues(self, frame, mask: np.ndarray, pred_iou: float = float("nan")) -> dict[str, float]:
        """Every image cue of one mask, and each weighted optional cue the frame supplies (all 0 when empty)."""
        out = cue_values(frame, mask, pred_iou)
        for name, (supplied, cue) in OPTIONAL.items():
            if name in self.weights and supplied(frame):
                out[name] = cue(frame, mask) if mask.any() else 0.0
        return out

    def score(self, frame, mask: np.ndarray, pred_iou: float = float("nan")) -> float:
        """Gate value of one mask in [0, 1] (higher = believed better): the weighted mean of the cues present."""
        c = self.cues(frame, mask, pred_iou)
        w = {k: max(0.0, v) for k, v in self.weights.items() if k in c}
        return float(sum(w[k] * c[k] for k in w) / max(sum(w.values()), 1e-9))

    def describe(self) -> dict:
        """The weights, for provenance and the genome table."""
        return {f"gate_{k}": float(v) for k, v in self.weights.items()}


def keep_best(current, proposals, gate_of, min_gain: float) -> tuple:
    """The keep-best rule: score the non-empty ``proposals`` with ``gate_of(candidate)``; the best replaces
    ``current`` if it beats the current gate by more than ``min_gain`` (and gets its mask's box when it has none).
    Returns (the candidate kept, whether a proposal was taken, [(proposal, gate)] of every non-empty proposal)."""
    props = [c for c in proposals if c is not None and not c.empty]
    if not props:
        return current, False, []
    scores = [gate_of(c) for c in props]
    scored = list(zip(props, scores))
    best = int(np.argmax(scores))
    if scores[best] > gate_of(current) + float(min_gain):
        if props[best].box is None:
            props[best].box = mask_to_box(props[best].mask)
        return props[best], True, scored
    return current, False, scored
