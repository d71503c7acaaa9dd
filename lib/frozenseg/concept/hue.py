"""Hybrid Uncertainty Estimation (HUE): a GT-free uncertainty U of a concept's mask on one image (how well U ranks
true Dice is measured in ``experiments.concept_report.correlation_table`` with ``evaluation.spearman_interval``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..boxes import mask_to_box
from .. import evaluation as ev

EMPTY_U = 2.0                # U of an empty concept mask
P_LO, P_HI = 0.05, 0.95      # the entropy term averages pixels with P_LO < p < P_HI


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
    ov = ev.iou(mask, box_mask)
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
