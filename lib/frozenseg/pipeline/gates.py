"""GT-free mask-quality gates: a weighted mean of cues computed from the image, the mask and the few-shot prior.

Keep-best loops accept a candidate only if the gate improves; notebook 10 measures, per domain, whether the
gate ranks masks like the true Dice does (the source found it valid on CXR and spleen, not on ISIC or Kvasir).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import ConfigError

CUES = ("pred_iou", "atlas", "colour", "area", "compact", "edge")


def ring(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` outside the mask."""
    return ndimage.binary_dilation(mask, iterations=max(1, width)) & ~mask


def cue_values(frame, mask: np.ndarray, pred_iou: float) -> dict[str, float]:
    """Every cue in [0, 1] for one mask (all 0 for an empty mask)."""
    if not mask.any():
        return dict.fromkeys(CUES, 0.0)
    prior = frame.prior
    atlas = frame.atlas
    inter = float((atlas * mask).sum())
    atlas_dice = 2 * inter / (float(atlas.sum()) + float(mask.sum()) + 1e-6)
    p = frame.fg_prob
    width = max(2, int(0.03 * max(mask.shape)))
    out_ring = ring(mask, width)
    inside = float(p[mask].mean())
    outside = float(p[out_ring].mean()) if out_ring.any() else 0.5
    lab, n = ndimage.label(mask)
    largest = np.bincount(lab.ravel())[1:].max() / mask.sum() if n else 0.0
    g = frame.grey
    in_ring = mask & ~ndimage.binary_erosion(mask, iterations=width)
    edge = abs(float(g[in_ring].mean()) - float(g[out_ring].mean())) / 255.0 if in_ring.any() and out_ring.any() else 0.0
    return {"pred_iou": float(np.clip(pred_iou, 0, 1)) if np.isfinite(pred_iou) else 0.0,
            "atlas": atlas_dice,
            "colour": float(np.clip(0.5 + 0.5 * (inside - outside), 0, 1)),
            "area": prior.area_score(mask),
            "compact": float(largest),
            "edge": float(min(1.0, 4 * edge))}


@dataclass
class Gate:
    """score = sum(w_c * cue_c) / sum(w); weights default to equal over the named cues."""

    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CUES, 1.0))

    def __post_init__(self):
        bad = set(self.weights) - set(CUES)
        if bad:
            raise ConfigError(f"unknown gate cue(s) {sorted(bad)}; choose from {list(CUES)}")
        if sum(max(0.0, w) for w in self.weights.values()) <= 0:
            raise ConfigError("gate weights must have a positive sum")

    def score(self, frame, mask: np.ndarray, pred_iou: float = float("nan")) -> float:
        """Gate value of one mask in [0, 1] (higher = believed better)."""
        cues = cue_values(frame, mask, pred_iou)
        w = {k: max(0.0, v) for k, v in self.weights.items()}
        return float(sum(w[k] * cues[k] for k in w) / sum(w.values()))

    def describe(self) -> dict:
        """The weights, for provenance and the genome table."""
        return {f"gate_{k}": float(v) for k, v in self.weights.items()}
