"""PerSAM, training-free (Zhang et al., "Personalize Segment Anything Model with One Shot", ICLR 2024), as a peer.

From the paper's description (no code of theirs is used): the target feature is the mean of the support masks'
foreground cells of the frozen image embedding (one support: PerSAM; N supports: each support's mean, averaged);
its cosine similarity with every query cell is the location confidence map, whose maximum is a positive point
prompt and whose minimum a negative one. The points are decoded, then the paper's cascaded post-refinement: the
points again with the first mask's low-resolution logits as mask prompt, then the points, the box of that mask and
its logits (the decoder's multimask outputs, the one with the highest predicted IoU kept at both steps).

Left out, because they change the decoder's internals that this project's model wrapper does not open: the
target-guided attention (the similarity map biasing the decoder's token-to-image cross-attention) and the
target-semantic prompting (the target feature added to every prompt token).
"""
from __future__ import annotations

import numpy as np

from ..boxes import mask_to_box
from .base import Localization, Localizer, no_detection
from .features import make_feature_space


def target_feature(maps, masks, min_cover: float = 0.5) -> np.ndarray:
    """Unit mean over supports of each support's mean foreground cell (cells at least ``min_cover`` covered; a
    target smaller than a cell: its best-covered cell)."""
    means = []
    for fm, mask in zip(maps, masks):
        cover = fm.pool_mask(mask)
        keep = cover >= min_cover if (cover >= min_cover).any() else cover >= cover.max()
        means.append(fm.flat()[keep].mean(0))
    t = np.mean(means, 0)
    return t / max(float(np.linalg.norm(t)), 1e-8)


def extreme_points(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((2, 2) xy of the map's maximum and minimum, (2,) labels 1 and 0)."""
    hi = np.unravel_index(int(np.argmax(sim)), sim.shape)
    lo = np.unravel_index(int(np.argmin(sim)), sim.shape)
    return np.array([[hi[1], hi[0]], [lo[1], lo[0]]], float), np.array([1, 0])


class PerSAMLocalizer(Localizer):
    """Target feature -> cosine location map -> positive and negative point -> points decoded, then the cascaded
    post-refinement (``refine`` steps, 0-2); the final mask rides on the answer (the pipeline takes it as is).
    ``shots`` > 0 keeps only the first that many supports with a target (1: PerSAM's one shot)."""

    name = "persam"
    defaults = {"features": "sam", "center": False, "shots": 0, "refine": 2}

    def _fit(self, cases, embeddings) -> None:
        """The target feature from the (first ``shots``) supports."""
        k = int(self.params["shots"])
        if k > 0:
            cases, embeddings = cases[:k], (embeddings[:k] if embeddings else embeddings)
        self.support_ids = [c.case_id for c in cases]
        self.space = make_feature_space(self.params["features"], self.model, center=bool(self.params["center"]))
        maps = [self.space(c.image, e) for c, e in zip(cases, embeddings or [None] * len(cases))]
        self.target = target_feature(maps, [c.mask for c in cases])

    def location_map(self, image, embedding) -> np.ndarray:
        """(H, W) cosine similarity of each query cell with the target feature, upsampled to the image."""
        fm = self.space(image, embedding)
        return fm.grid.upsample((fm.flat() @ self.target).reshape(fm.grid.shape))

    def _locate(self, image, embedding) -> Localization:
        """Points from the location map, decoded and refined with the frozen model."""
        sim = self.location_map(image, embedding)
        pts, labels = extreme_points(sim)
        masks, calls = self.decode_cascade(embedding, pts, labels)
        mask = masks[-1]
        extra = {"peer": "persam", "supports": len(self.support_ids), "decoder_calls": calls,
                 "refine_steps": len(masks) - 1, "pos_x": int(pts[0, 0]), "pos_y": int(pts[0, 1]),
                 "neg_x": int(pts[1, 0]), "neg_y": int(pts[1, 1]), "location_map": sim}
        if not mask.any():
            return no_detection("PerSAM's points decoded an empty mask", **extra)
        return Localization(box=mask_to_box(mask), score=float(sim.max()), extra=extra, points=pts,
                            point_labels=labels, mask=mask)

    def decode_cascade(self, embedding, pts: np.ndarray, labels: np.ndarray) -> tuple[list, int]:
        """([mask after the points, after each refinement step], decoder calls); a step whose mask comes out empty
        ends the cascade with the mask before it."""
        m = self.model
        pred = m.decode(embedding, points=pts[None], point_labels=labels[None])
        masks, low, calls = [pred.masks[0]], pred.low_res[0], 1
        for step in range(int(self.params["refine"])):
            if not masks[-1].any():
                break
            box = mask_to_box(masks[-1])[None] if step >= 1 else None
            pred = m.decode(embedding, boxes=box, points=pts[None], point_labels=labels[None],
                            mask_input=low[None, None], multimask=True)
            calls += 1
            k = int(np.argmax(pred.iou))
            if not pred.masks[k].any():
                break
            masks.append(pred.masks[k])
            low = pred.low_res[k]
        return masks, calls
