"""Hybrid Uncertainty Estimation (HUE) and how well it ranks true Dice."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..boxes import mask_to_box
from ..evaluation.metrics import iou

EMPTY_U = 2.0
P_LO, P_HI = 0.05, 0.95


@dataclass
class Hue:
    """HUE of one image: U, its two terms, and whether the concept mask was empty."""

    u: float
    box_iou: float          # IoU(concept mask, box-prompted mask); NaN when the concept mask is empty
    entropy: float          # mean binary entropy (nats) over pixels with 0.05 < p < 0.95
    empty_mask: bool

    def to_dict(self) -> dict:
        """Plain dict for result rows."""
        return asdict(self)


def mean_uncertain_entropy(logits: np.ndarray) -> float:
    """Mean binary entropy (nats) over pixels with 0.05 < p < 0.95; 0 when no pixel is uncertain."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    sel = (p > P_LO) & (p < P_HI)
    if not sel.any():
        return 0.0
    q = p[sel]
    return float(np.mean(-(q * np.log(q) + (1 - q) * np.log(1 - q))))


def hue_from_logits(logits: np.ndarray, box_prompt) -> Hue:
    """U = (1 - IoU(concept mask, mask of its own box)) + entropy; ``box_prompt(box) -> (H, W) logits``."""
    mask = logits > 0
    if not mask.any():
        return Hue(u=EMPTY_U, box_iou=float("nan"), entropy=mean_uncertain_entropy(logits), empty_mask=True)
    box_mask = box_prompt(mask_to_box(mask)) > 0
    ov = iou(mask, box_mask)
    ent = mean_uncertain_entropy(logits)
    return Hue(u=(1.0 - ov) + ent, box_iou=ov, entropy=ent, empty_mask=False)


def hue_scores(backend, feats, logits_list) -> list[Hue]:
    """HUE of each image from the concept's logits, re-prompting the backend with each mask's box.

    A backend with ``box_logits_many`` decodes all boxes of non-empty masks in batches first.
    """
    if not hasattr(backend, "box_logits_many"):
        return [hue_from_logits(lg, lambda box, f=f: backend.box_logits(f, box)) for f, lg in zip(feats, logits_list)]
    masks = [lg > 0 for lg in logits_list]
    todo = [j for j, m in enumerate(masks) if m.any()]
    decoded = dict(zip(todo, backend.box_logits_many([feats[j] for j in todo], [mask_to_box(masks[j]) for j in todo])))
    return [hue_from_logits(lg, lambda box, j=j: decoded[j]) for j, lg in enumerate(logits_list)]


def rank_correlation(u, dice, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Spearman rho of U vs true Dice with a seeded percentile-bootstrap interval (flag when undefined)."""
    from scipy.stats import spearmanr

    u, d = np.asarray(u, dtype=float), np.asarray(dice, dtype=float)
    ok = np.isfinite(u) & np.isfinite(d)
    u, d = u[ok], d[ok]
    out = {"rho": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": int(len(u)), "flag": ""}
    if len(u) < 3:
        return {**out, "flag": "too_few_cases"}
    if np.ptp(u) == 0 or np.ptp(d) == 0:
        return {**out, "flag": "constant_input"}
    out["rho"] = float(spearmanr(u, d).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(u), len(u))
        if np.ptp(u[idx]) > 0 and np.ptp(d[idx]) > 0:
            boots.append(spearmanr(u[idx], d[idx]).statistic)
    if boots:
        a = (1 - level) / 2
        out["lo"], out["hi"] = (float(v) for v in np.quantile(boots, [a, 1 - a]))
    return out
