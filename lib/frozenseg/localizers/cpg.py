"""Dense-correspondence label transfer (CPG, after OP-SAM): support masks carried to the query by patch correlation.

For every query cell, its cosine correlation with every support cell is read through that support's
mask (top-k foreground matches minus top-k background matches), fused over the supports into a
prior map; the prior's peak picks a connected component whose box prompts the frozen decoder, and
the decoder's multimask outputs are chosen by agreement with the prior (:func:`select_by_prior`, run by the
pipeline's ``prior_select`` skill).
"""
from __future__ import annotations

import numpy as np

from ..evaluation.metrics import dice
from .base import Localization, Localizer, component_box, no_detection, otsu
from .features import make_feature_space


def topk_mean(corr: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k largest values of each row of (Nq, Ns) (k clipped to Ns; an empty support gives zeros)."""
    if corr.shape[1] == 0:
        return np.zeros(corr.shape[0], np.float32)
    k = max(1, min(int(k), corr.shape[1]))
    return np.partition(corr, corr.shape[1] - k, axis=1)[:, -k:].mean(1)


def support_cells(fm, mask: np.ndarray, max_bg: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(foreground rows, background rows) of one support's features; background subsampled to ``max_bg`` rows."""
    cover = fm.pool_mask(mask)
    f = fm.flat()
    fg = cover >= 0.5 if (cover >= 0.5).any() else cover >= cover.max()
    bg = np.flatnonzero(cover == 0)
    if len(bg) > max_bg:
        bg = np.sort(rng.choice(bg, max_bg, replace=False))
    return f[fg], f[bg]


def transfer_prior(query: np.ndarray, supports: list, k: int, contrast: bool) -> np.ndarray:
    """(Nq,) prior: per support, top-k foreground correlation (minus top-k background), averaged over supports."""
    out = np.zeros(query.shape[0], np.float64)
    for fg, bg in supports:
        p = topk_mean(query @ fg.T, k)
        if contrast:
            p = p - topk_mean(query @ bg.T, k)
        out += p
    return (out / len(supports)).astype(np.float32)


def select_by_prior(masks: np.ndarray, pred_iou: np.ndarray, prior: np.ndarray, iou_weight: float = 0.0) -> int:
    """Index of the mask that agrees best with a binary prior (Dice), plus ``iou_weight`` x predicted IoU."""
    agree = np.array([dice(m, prior) for m in masks])
    return int(np.argmax(agree + iou_weight * np.asarray(pred_iou)))


class CPGLocalizer(Localizer):
    """Few-shot dense-correspondence localizer: prior peak -> connected component -> box; the prior map and its
    threshold ride on the answer for the pipeline's prior-guided mask selection (skill ``prior_select``)."""

    name = "cpg"
    defaults = {"features": "auto", "pool": 2, "topk": 3, "contrast": True, "threshold": 0.7,
                "max_bg": 1024, "seed": 0}

    def _fit(self, cases, embeddings) -> None:
        """Keep each support's foreground and background cell features."""
        self.space = make_feature_space(self.params["features"], self.model, pool=self.params["pool"])
        rng = np.random.default_rng(self.params["seed"])
        embs = embeddings or [None] * len(cases)
        self.supports = [support_cells(self.space(c.image, e), c.mask, self.params["max_bg"], rng)
                         for c, e in zip(cases, embs)]

    def prior(self, image, embedding) -> np.ndarray:
        """(H, W) transferred prior, min-max scaled to [0, 1]."""
        fm = self.space(image, embedding)
        p = transfer_prior(fm.flat(), self.supports, self.params["topk"], self.params["contrast"])
        p = fm.grid.upsample(p.reshape(fm.grid.shape))
        lo, hi = float(p.min()), float(p.max())
        return (p - lo) / (hi - lo) if hi > lo else np.zeros_like(p)

    def _locate(self, image, embedding) -> Localization:
        """Peak of the prior -> its connected component above the threshold -> box."""
        prior = self.prior(image, embedding)
        if not prior.any():
            return no_detection("the transferred prior is flat", feature_space=self.space.name)
        thr = self.params["threshold"]
        t = otsu(prior) if thr == "otsu" else float(thr)
        peak = np.unravel_index(int(np.argmax(prior)), prior.shape)
        box, comp = component_box(prior >= min(t, prior[peak]), "seed", seed_yx=peak)
        if box is None:
            return no_detection("no component at the prior peak", feature_space=self.space.name)
        return Localization(box=box, score=float(prior[comp].mean()),
                            extra={"feature_space": self.space.name, "threshold": t,
                                   "peak_x": int(peak[1]), "peak_y": int(peak[0]), "prior": prior})
