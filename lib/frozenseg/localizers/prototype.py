"""Frozen-feature prototype localizer: one mean foreground feature, a cosine map, a threshold, a component.

Identical code on every domain: only the support set changes.
"""
from __future__ import annotations

import numpy as np

from .base import Localization, Localizer, component_box, no_detection, otsu
from .features import make_feature_space


def foreground_prototype(maps, masks, min_cover: float = 0.5) -> np.ndarray:
    """Unit mean of the support cells covered by foreground (weighted by coverage above ``min_cover``)."""
    rows, weights = [], []
    for fm, mask in zip(maps, masks):
        cover = fm.pool_mask(mask)
        keep = cover >= min_cover
        if not keep.any():
            keep = cover >= cover.max()          # a target smaller than one cell: its best-covered cell
        rows.append(fm.flat()[keep])
        weights.append(cover[keep])
    f = np.concatenate(rows)
    w = np.concatenate(weights)[:, None]
    p = (f * w).sum(0) / w.sum()
    return p / max(np.linalg.norm(p), 1e-8)


def background_prototype(maps, masks) -> np.ndarray:
    """Unit mean of the support cells with no foreground."""
    f = np.concatenate([fm.flat()[fm.pool_mask(m) == 0] for fm, m in zip(maps, masks)])
    p = f.mean(0) if len(f) else np.zeros(maps[0].cells.shape[0], np.float32)
    return p / max(np.linalg.norm(p), 1e-8)


class PrototypeLocalizer(Localizer):
    """Mean support foreground feature -> cosine similarity map -> threshold -> largest component -> box."""

    name = "prototype"
    defaults = {"features": "sam", "contrast": True, "threshold": "otsu", "select": "largest"}

    def _fit(self, cases, embeddings) -> None:
        """Build the foreground (and background) prototypes from the support features."""
        self.space = make_feature_space(self.params["features"], self.model)
        maps = [self.space(c.image, e) for c, e in zip(cases, embeddings or [None] * len(cases))]
        masks = [c.mask for c in cases]
        self.fg = foreground_prototype(maps, masks)
        self.bg = background_prototype(maps, masks)

    def similarity(self, image, embedding) -> np.ndarray:
        """(H, W) similarity map: cos(fg) - cos(bg) with ``contrast``, else cos(fg)."""
        fm = self.space(image, embedding)
        s = fm.flat() @ self.fg
        if self.params["contrast"]:
            s = s - fm.flat() @ self.bg
        return fm.grid.upsample(s.reshape(fm.grid.shape))

    def _locate(self, image, embedding) -> Localization:
        """Threshold the similarity map and box one component."""
        sim = self.similarity(image, embedding)
        thr = self.params["threshold"]
        t = otsu(sim) if thr == "otsu" else float(thr)
        binary = sim > t
        if self.params["contrast"]:
            binary &= sim > 0
        peak = np.unravel_index(int(np.argmax(sim)), sim.shape)
        box, comp = component_box(binary, self.params["select"], weight=np.clip(sim - t, 0, None), seed_yx=peak)
        if box is None:
            return no_detection("no cell above the similarity threshold", threshold=t)
        return Localization(box=box, score=float(sim[comp].mean()),
                            extra={"threshold": t, "feature_space": self.space.name, "area": int(comp.sum())})
