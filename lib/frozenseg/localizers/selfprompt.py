"""Self-prompting SAM (Wu et al., "Self-Prompting Large Vision Models for Few-Shot Medical Image Segmentation",
MICCAI 2023 workshop DART), as a peer.

From the paper's description (no code of theirs is used): a logistic-regression head classifies each cell of the
frozen image embedding as target or not, fit on the cells of the labelled images (a cell is target where the mask
covers at least half of it); on a query, its predicted mask, resized to 256 px and cleaned by 3 erosions then 5
dilations with a 5 x 5 kernel, gives the prompts: its bounding box and the point farthest inside it (maximum of the
distance transform). The pipeline decodes the box and the point together. The head minimises scikit-learn's default
logistic-regression objective (the paper's classifier: L2 penalty, C = 1, intercept), solved with L-BFGS in PyTorch.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .base import Localization, Localizer, no_detection
from .grid import FeatureGrid


def embedding_cells(model, emb) -> tuple[np.ndarray, FeatureGrid]:
    """((cells, C) raw features of the embedding's valid cells, their grid)."""
    if emb is None:
        from ..errors import ConfigError

        raise ConfigError("selfprompt needs the image's embedding (pass study.embeddings(cases))")
    grid = FeatureGrid.of(model, emb)
    f = grid.valid(np.asarray(emb.features, np.float32))
    return f.reshape(f.shape[0], -1).T, grid


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0, max_iter: int = 200) -> tuple[np.ndarray, float]:
    """(weights, intercept) minimising ``C * sum(log loss) + ||w||^2 / 2`` (intercept not penalised), as
    scikit-learn's default LogisticRegression; full-batch L-BFGS in float64."""
    xt, yt = torch.from_numpy(np.asarray(x, np.float64)), torch.from_numpy(np.asarray(y, np.float64))
    w = torch.zeros(xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=int(max_iter), tolerance_grad=1e-6, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        v = float(c) * F.binary_cross_entropy_with_logits(xt @ w + b, yt, reduction="sum") + 0.5 * (w * w).sum()
        v.backward()
        return v

    opt.step(loss)
    return w.detach().numpy(), float(b.detach())


def clean_mask(prob: np.ndarray, side: int, erode: int, dilate: int, kernel: int) -> tuple[np.ndarray, float]:
    """The (H, W) probability map resized so its long side is ``side``, thresholded at 0.5, eroded then dilated;
    returns (mask at that size, its scale per original pixel). When the erosion removes everything the thresholded
    mask is kept."""
    s = side / max(prob.shape)
    size = (max(1, round(prob.shape[0] * s)), max(1, round(prob.shape[1] * s)))
    p = F.interpolate(torch.from_numpy(np.ascontiguousarray(prob, np.float32))[None, None], size=size,
                      mode="bilinear", align_corners=False)[0, 0].numpy()
    raw = p >= 0.5
    st = np.ones((kernel, kernel), bool)
    m = ndimage.binary_erosion(raw, st, iterations=erode) if erode else raw
    m = ndimage.binary_dilation(m, st, iterations=dilate) if dilate else m
    return (m if m.any() else raw), s


def prompts_from_mask(mask: np.ndarray, scale: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(box xyxy, (1, 2) point xy) in original pixels of a mask at ``scale``: its bounding box and the maximum of
    its distance transform."""
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float) / scale
    box = np.clip(box - np.array([0, 0, 1, 1]), 0, [shape[1] - 1, shape[0] - 1] * 2)
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    pt = np.clip((np.array([[x, y]], float) + 0.5) / scale - 0.5, 0, [shape[1] - 1, shape[0] - 1])
    return box, pt


class SelfPromptLocalizer(Localizer):
    """Logistic regression on embedding cells -> predicted mask -> its box and its deepest point, decoded together."""

    name = "selfprompt"
    defaults = {"C": 1.0, "max_iter": 200, "side": 256, "erode": 3, "dilate": 5, "kernel": 5, "cover": 0.5}

    def _fit(self, cases, embeddings) -> None:
        """Fit the head on every valid cell of the labelled images."""
        xs, ys = [], []
        for c, e in zip(cases, embeddings or [None] * len(cases)):
            x, grid = embedding_cells(self.model, e)
            xs.append(x)
            ys.append(grid.pool(c.mask).reshape(-1) >= float(self.params["cover"]))
        y = np.concatenate(ys)
        self.support_ids = [c.case_id for c in cases]
        self.w, self.b = fit_logistic(np.concatenate(xs), y, self.params["C"], self.params["max_iter"])
        self.cells_fit, self.cells_target = int(len(y)), int(y.sum())

    def probability(self, embedding) -> np.ndarray:
        """(H, W) predicted target probability, the head's cell map upsampled to the image."""
        x, grid = embedding_cells(self.model, embedding)
        logit = (x.astype(np.float64) @ self.w + self.b).astype(np.float32)
        return 1 / (1 + np.exp(-grid.upsample(logit.reshape(grid.shape))))

    def _locate(self, image, embedding) -> Localization:
        """The predicted mask's box and deepest point (no_detection when the head predicts no target cell)."""
        prob = self.probability(embedding)
        p = self.params
        small, scale = clean_mask(prob, int(p["side"]), int(p["erode"]), int(p["dilate"]), int(p["kernel"]))
        extra = {"peer": "selfprompt", "supports": len(self.support_ids), "cells_fit": self.cells_fit,
                 "cells_target": self.cells_target}
        if not small.any():
            return no_detection("the logistic-regression head predicts no target", **extra)
        box, pt = prompts_from_mask(small, scale, image.shape[:2])
        coarse = F.interpolate(torch.from_numpy(small.astype(np.float32))[None, None], size=image.shape[:2],
                               mode="nearest")[0, 0].numpy() > 0.5
        return Localization(box=box, score=float(prob[coarse].mean()) if coarse.any() else float("nan"),
                            extra={**extra, "point_x": float(pt[0, 0]), "point_y": float(pt[0, 1]),
                                   "coarse_mask": coarse},
                            points=pt, point_labels=np.array([1]))
