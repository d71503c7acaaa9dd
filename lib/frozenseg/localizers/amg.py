"""Automatic-mask-generator candidates ranked by few-shot prototypes in one or several frozen feature spaces.

A grid of single-point prompts goes through the frozen decoder (multimask); candidates are kept by
predicted IoU and area, de-duplicated by mask-IoU NMS, and ranked by the cosine similarity of their
pooled features to the support prototypes. With several feature spaces (e.g. SAM + DINOv2) the
ranking score is the mean of the per-space z-scored similarities.
"""
from __future__ import annotations

import numpy as np

from ..boxes import mask_to_box
from ..errors import ConfigError
from .base import Localization, Localizer, no_detection
from .features import dinov2_weights, make_feature_space
from .prototype import background_prototype, foreground_prototype


def grid_points(shape: tuple[int, int], n: int) -> np.ndarray:
    """(n*n, 1, 2) xy point prompts at the centres of an n x n grid over the image."""
    h, w = shape
    xs, ys = (np.arange(n) + 0.5) * w / n, (np.arange(n) + 0.5) * h / n
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 1, 2)


def grid_boxes(shape: tuple[int, int], n: int, scales) -> np.ndarray:
    """(n*n*len(scales), 4) xyxy square-ish box prompts centred on an n x n grid, sides = scale x image side."""
    h, w = shape
    out = []
    for s in scales:
        bw, bh = s * w, s * h
        cx = np.linspace(bw / 2, w - 1 - bw / 2, n) if n > 1 else np.array([(w - 1) / 2])
        cy = np.linspace(bh / 2, h - 1 - bh / 2, n) if n > 1 else np.array([(h - 1) / 2])
        for y in cy:
            for x in cx:
                out.append([x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2])
    return np.clip(np.array(out), 0, [w - 1, h - 1, w - 1, h - 1])


def mask_nms(masks: np.ndarray, scores: np.ndarray, iou_thresh: float, step: int = 4) -> list[int]:
    """Greedy NMS by mask IoU (computed on every ``step``-th pixel); returns kept indices by descending score."""
    small = masks[:, ::step, ::step].reshape(len(masks), -1).astype(np.float32)
    inter = small @ small.T
    area = small.sum(1)
    iou = inter / np.maximum(area[:, None] + area[None] - inter, 1)
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(iou[i, j] <= iou_thresh for j in keep):
            keep.append(int(i))
    return keep


def zscore(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over candidates (zeros when they are all equal)."""
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


def resolve_spaces(spec) -> list:
    """Feature-space names: a name, a list, or 'auto' (SAM, plus DINOv2 when its weights are present)."""
    if spec == "auto":
        return ["sam", "dinov2"] if dinov2_weights() is not None else ["sam"]
    return [spec] if isinstance(spec, str) or hasattr(spec, "name") else list(spec)


class AMGLocalizer(Localizer):
    """Grid-prompt candidates (boxes by default: LiteMedSAM/MedSAM are box-trained) ranked by few-shot prototypes."""

    name = "amg"
    defaults = {"features": "auto", "prompts": "boxes", "points_per_side": 3, "box_scales": (0.3, 0.55),
                "min_pred_iou": 0.0, "nms_iou": 0.7,
                "min_area": 0.002, "max_area": 0.8, "contrast": True, "agg": "max"}

    def __init__(self, model=None, **params):
        super().__init__(model, **params)
        if self.params["prompts"] not in ("points", "boxes"):
            raise ConfigError(f"amg prompts must be 'points' or 'boxes', got {self.params['prompts']!r}")

    def _fit(self, cases, embeddings) -> None:
        """Per-space per-support foreground prototypes and one background prototype."""
        self.spaces = [make_feature_space(s, self.model) for s in resolve_spaces(self.params["features"])]
        embs = embeddings or [None] * len(cases)
        self.protos = []
        for sp in self.spaces:
            maps = [sp(c.image, e) for c, e in zip(cases, embs)]
            fg = np.stack([foreground_prototype([m], [c.mask]) for m, c in zip(maps, cases)])
            self.protos.append((fg, background_prototype(maps, [c.mask for c in cases])))

    def candidates(self, image, embedding) -> tuple[np.ndarray, np.ndarray]:
        """(masks (K, H, W), predicted IoU (K,)) after the IoU, area and NMS filters."""
        n = self.params["points_per_side"]
        if self.params["prompts"] == "boxes":
            pred = self.model.decode(embedding, boxes=grid_boxes(image.shape[:2], n, self.params["box_scales"]),
                                     multimask=True)
        else:
            pts = grid_points(image.shape[:2], n)
            pred = self.model.decode(embedding, points=pts, point_labels=np.ones(pts.shape[:2]), multimask=True)
        masks, iou = pred.masks, pred.iou
        frac = masks.reshape(len(masks), -1).mean(1)
        p = self.params
        ok = (iou >= p["min_pred_iou"]) & (frac >= p["min_area"]) & (frac <= p["max_area"])
        masks, iou = masks[ok], iou[ok]
        keep = mask_nms(masks, iou, self.params["nms_iou"]) if len(masks) else []
        return masks[keep], iou[keep]

    def similarities(self, image, embedding, masks) -> np.ndarray:
        """(spaces, K) prototype similarity of each candidate's pooled feature in each space."""
        out = []
        for sp, (fg, bg) in zip(self.spaces, self.protos):
            fm = sp(image, embedding)
            w = fm.grid.pool(masks).reshape(len(masks), -1)
            pooled = w @ fm.flat() / np.maximum(w.sum(1, keepdims=True), 1e-8)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-8)
            s = pooled @ fg.T
            s = s.max(1) if self.params["agg"] == "max" else s.mean(1)
            out.append(s - pooled @ bg if self.params["contrast"] else s)
        return np.stack(out)

    def _locate(self, image, embedding) -> Localization:
        """Best-ranked candidate's box (its mask is kept in ``extra['mask']``)."""
        masks, iou = self.candidates(image, embedding)
        if len(masks) == 0:
            return no_detection("no candidate passed the IoU/area filters")
        sims = self.similarities(image, embedding, masks)
        rank = np.mean([zscore(s) for s in sims], 0) if len(sims) > 1 else sims[0]
        k = int(np.argmax(rank))
        return Localization(box=mask_to_box(masks[k]), score=float(sims[:, k].mean()),
                            extra={"n_candidates": int(len(masks)), "pred_iou": float(iou[k]),
                                   "feature_spaces": "+".join(sp.name for sp in self.spaces), "mask": masks[k]})
