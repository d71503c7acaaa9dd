"""Static few-shot box: the mean of N support ground-truth boxes in normalised image coordinates."""
from __future__ import annotations

import numpy as np

from ..boxes import clip_box, mask_to_box
from .base import Localization, Localizer


def normalised_box(mask: np.ndarray) -> np.ndarray:
    """Tight box of a mask divided by (W-1, H-1, W-1, H-1): corners in [0, 1]."""
    h, w = mask.shape
    return mask_to_box(mask) / np.array([w - 1, h - 1, w - 1, h - 1], dtype=np.float64)


def _iou01(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two continuous boxes (normalised coordinates, no +1 pixel convention)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class StaticBoxLocalizer(Localizer):
    """Places the mean normalised support box on every image (the CXR lung box of the source study)."""

    name = "static_box"
    defaults = {"margin": 0.0}

    def _fit(self, cases, embeddings) -> None:
        """Mean of the support boxes, normalised per image so sizes may differ."""
        boxes = np.stack([normalised_box(c.mask) for c in cases])
        self.box01 = boxes.mean(0)
        self.spread = float(np.mean([_iou01(b, self.box01) for b in boxes]))
        self.n_support = len(cases)

    def _locate(self, image, embedding) -> Localization:
        """The mean box scaled to this image (score: mean IoU of the support boxes with it)."""
        h, w = image.shape[:2]
        box = self.box01 * np.array([w - 1, h - 1, w - 1, h - 1])
        m = self.params["margin"]
        if m:
            bw, bh = box[2] - box[0], box[3] - box[1]
            box = box + m * np.array([-bw, -bh, bw, bh])
        return Localization(box=clip_box(box, (h, w)), score=self.spread, extra={"n_support": self.n_support})
