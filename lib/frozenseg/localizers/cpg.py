"""Dense-correspondence label transfer (CPG, after OP-SAM): support masks carried to the query by patch correlation.

Every query cell is scored against the support cells (:mod:`.transfer`: per-support top-k, or pooled
k-nearest-neighbour votes with ``transfer="knn"``) into a prior map, optionally averaged with the mirrored image's
map (``flip``) and blended with a colour/texture space's map (``colour_weight``). The prior's peak picks a
connected component whose box prompts the frozen decoder; its next peaks (``peaks`` > 1) ride along as candidate
boxes for the pipeline's ``peak_select`` skill, and the decoder's multimask outputs are chosen by agreement with
the prior (:func:`select_by_prior`, skills ``prior_select`` / ``peak_select``).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..evaluation.metrics import dice
from .base import Localization, Localizer, component_box, no_detection, otsu
from .features import ColourFeatures, make_feature_space
from .transfer import flip_averaged, knn_prior, pooled_cells, prior_peaks, topk_mean, transfer_prior  # noqa: F401

TRANSFERS = ("topk", "knn")


def support_cells(fm, mask: np.ndarray, max_bg: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(foreground rows, background rows) of one support's features; background subsampled to ``max_bg`` rows."""
    cover = fm.pool_mask(mask)
    f = fm.flat()
    fg = cover >= 0.5 if (cover >= 0.5).any() else cover >= cover.max()
    bg = np.flatnonzero(cover == 0)
    if len(bg) > max_bg:
        bg = np.sort(rng.choice(bg, max_bg, replace=False))
    return f[fg], f[bg]


def select_by_prior(masks: np.ndarray, pred_iou: np.ndarray, prior: np.ndarray, iou_weight: float = 0.0) -> int:
    """Index of the mask that agrees best with a binary prior (Dice), plus ``iou_weight`` x predicted IoU."""
    agree = np.array([dice(m, prior) for m in masks])
    return int(np.argmax(agree + iou_weight * np.asarray(pred_iou)))


def minmax(p: np.ndarray) -> np.ndarray:
    """A map scaled to [0, 1] (a flat map gives zeros)."""
    lo, hi = float(p.min()), float(p.max())
    return (p - lo) / (hi - lo) if hi > lo else np.zeros_like(p)


class CPGLocalizer(Localizer):
    """Few-shot dense-correspondence localizer: prior peak -> connected component -> box; the prior map, its
    threshold and the other peaks' boxes ride on the answer for the pipeline's prior-guided skills."""

    name = "cpg"
    defaults = {"features": "auto", "pool": 2, "topk": 3, "contrast": True, "threshold": 0.7,
                "max_bg": 1024, "seed": 0, "transfer": "topk", "knn": 20, "temperature": 0.05, "flip": False,
                "colour_weight": 0.0, "peaks": 1}

    def _fit(self, cases, embeddings) -> None:
        """Keep each support's foreground and background cell features (and the colour space's)."""
        if self.params["transfer"] not in TRANSFERS:
            raise ConfigError(f"cpg: unknown transfer {self.params['transfer']!r}; choose one of {TRANSFERS}")
        self.space = make_feature_space(self.params["features"], self.model, pool=self.params["pool"])
        rng = np.random.default_rng(self.params["seed"])
        embs = embeddings or [None] * len(cases)
        self.supports = [support_cells(self.space(c.image, e), c.mask, self.params["max_bg"], rng)
                         for c, e in zip(cases, embs)]
        self.pooled = pooled_cells(self.supports)
        self.colour_space, self._cases, self._colour = ColourFeatures(), list(cases), None

    def _cell_prior(self, fm, supports, pooled) -> np.ndarray:
        """(H, W) prior of one feature map under the chosen transfer rule, min-max scaled."""
        q = fm.flat()
        if self.params["transfer"] == "knn":
            p = knn_prior(q, *pooled, self.params["knn"], self.params["temperature"])
        else:
            p = transfer_prior(q, supports, self.params["topk"], self.params["contrast"])
        return minmax(fm.grid.upsample(p.reshape(fm.grid.shape)))

    def _space_prior(self, image, embedding) -> np.ndarray:
        """The main space's prior of one image (its own embedding)."""
        return self._cell_prior(self.space(image, embedding), self.supports, self.pooled)

    def _colour_prior(self, image, embedding=None) -> np.ndarray:
        """The colour/texture space's prior of one image."""
        if self._colour is None:        # the colour space's support cells, built on first use
            rng = np.random.default_rng(self.params["seed"])
            sup = [support_cells(self.colour_space(c.image), c.mask, self.params["max_bg"], rng) for c in self._cases]
            self._colour = (sup, pooled_cells(sup))
        return self._cell_prior(self.colour_space(image), *self._colour)

    def mirrored_embedding(self, image):
        """The mirrored image's embedding (encoded once, cached on disk) where the main space reads embeddings."""
        if getattr(self.space, "name", "") != "sam":
            return None
        from ..cache import EmbeddingCache

        return EmbeddingCache().get(self.model, image[:, ::-1].copy())

    def prior(self, image, embedding) -> np.ndarray:
        """(H, W) transferred prior in [0, 1]: the main space's (flip-averaged with ``flip``), blended with the
        colour space's at weight ``colour_weight``."""
        if self.params["flip"]:
            p = flip_averaged(self._space_prior, image, embedding, self.mirrored_embedding(image))
        else:
            p = self._space_prior(image, embedding)
        w = float(self.params["colour_weight"])
        if w > 0:
            c = (flip_averaged(self._colour_prior, image) if self.params["flip"] else self._colour_prior(image))
            p = (1 - w) * p + w * c
        return minmax(p)

    def _locate(self, image, embedding) -> Localization:
        """Peak of the prior -> its connected component above the threshold -> box; the next peaks' boxes too."""
        prior = self.prior(image, embedding)
        if not prior.any():
            return no_detection("the transferred prior is flat", feature_space=self.space.name)
        thr = self.params["threshold"]
        t = otsu(prior) if thr == "otsu" else float(thr)
        peak = np.unravel_index(int(np.argmax(prior)), prior.shape)
        box, comp = component_box(prior >= min(t, prior[peak]), "seed", seed_yx=peak)
        if box is None:
            return no_detection("no component at the prior peak", feature_space=self.space.name)
        others = [b for b, _, _ in prior_peaks(prior, min(t, prior[peak]), int(self.params["peaks"]))[1:]]
        return Localization(box=box, score=float(prior[comp].mean()),
                            extra={"feature_space": self.space.name, "threshold": t,
                                   "peak_x": int(peak[1]), "peak_y": int(peak[0]), "prior": prior,
                                   "candidate_boxes": others,
                                   "self_prior": lambda mask: self.self_prior(image, embedding, mask)})

    def self_prior(self, image, embedding, mask: np.ndarray) -> np.ndarray:
        """(H, W) cosine similarity in [0, 1] of each query cell to the mean feature of the query's own ``mask``
        (the query-specific prototype of OP-SAM's prompt evolution); zeros for an empty mask."""
        fm = self.space(image, embedding)
        cover = fm.pool_mask(mask)
        if not (cover > 0).any():
            return np.zeros(mask.shape, np.float32)
        f = fm.flat()
        proto = (f * cover[:, None]).sum(0)
        proto /= max(float(np.linalg.norm(proto)), 1e-8)
        return minmax(fm.grid.upsample((f @ proto).reshape(fm.grid.shape)))
