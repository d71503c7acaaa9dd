"""One image under segmentation: the image, its cached embedding, the frozen model, the few-shot prior and a
memo of decoder calls (so a skill that proposes a box already tried costs nothing)."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..boxes import clip_box
from .prior import DomainPrior, grey


@dataclass
class Candidate:
    """A mask with where it came from: the prompt box, the decoder's predicted IoU and the proposing step."""

    mask: np.ndarray
    box: np.ndarray | None = None
    pred_iou: float = float("nan")
    origin: str = ""
    low_res: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        """True when the mask has no pixel."""
        return not self.mask.any()


@dataclass
class Frame:
    """Everything a skill may read for one image; ``decode`` memoizes on the rounded prompt."""

    image: np.ndarray
    embedding: object
    model: object
    prior: DomainPrior
    gate: object = None
    localization: object = None          # the localizer's answer on this image (set by ``Pipeline.localize``)
    _memo: dict = field(default_factory=dict, repr=False)
    decoder_calls: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return self.image.shape[:2]

    @functools.cached_property
    def grey(self) -> np.ndarray:
        """Grey levels of the image."""
        return grey(self.image)

    @functools.cached_property
    def fg_prob(self) -> np.ndarray:
        """p(foreground | colour) from the prior's colour model."""
        return self.prior.fg_probability(self.image)

    @functools.cached_property
    def atlas(self) -> np.ndarray:
        """The location atlas at this image's size."""
        return self.prior.atlas_at(self.shape)

    def gate_value(self, cand: Candidate) -> float:
        """The pipeline gate's score of a candidate (0 for an empty mask)."""
        return 0.0 if cand.empty else self.gate.score(self, cand.mask, cand.pred_iou)

    def decode(self, box=None, points=None, labels=None, mask_input=None, origin: str = "") -> Candidate:
        """One decoder call (box xyxy and/or points xy with labels 1/0, original pixels), memoized."""
        box = None if box is None else clip_box(np.round(np.asarray(box, float)), self.shape)
        pts = None if points is None else np.round(np.asarray(points, float).reshape(-1, 2), 1)
        lab = None if labels is None else np.asarray(labels, int).reshape(-1)
        key = (None if box is None else tuple(box), None if pts is None else pts.tobytes(),
               None if lab is None else lab.tobytes(), None if mask_input is None else id(mask_input))
        if key not in self._memo:
            self.decoder_calls += 1
            pred = self.model.decode(self.embedding, boxes=None if box is None else box[None],
                                     points=None if pts is None else pts[None],
                                     point_labels=None if lab is None else lab[None],
                                     mask_input=None if mask_input is None else mask_input[None, None])
            self._memo[key] = (pred.masks[0], float(pred.iou[0]), pred.low_res[0])
        m, piou, low = self._memo[key]
        return Candidate(mask=m, box=box, pred_iou=piou, origin=origin, low_res=low)

    def decode_multi(self, box, origin: str = "") -> list[Candidate]:
        """The decoder's multimask outputs (SAM's three granularities) for one box prompt, memoized."""
        box = clip_box(np.round(np.asarray(box, float)), self.shape)
        key = ("multi", tuple(box))
        if key not in self._memo:
            self.decoder_calls += 1
            pred = self.model.decode(self.embedding, boxes=box[None], multimask=True)
            self._memo[key] = [(m, float(i), low) for m, i, low in zip(pred.masks, pred.iou, pred.low_res)]
        return [Candidate(mask=m, box=box, pred_iou=i, origin=f"{origin}_{k}", low_res=low)
                for k, (m, i, low) in enumerate(self._memo[key])]
