"""Concept-search localizer: prompt tokens learned on the support embeddings through the frozen decoder
(``frozenseg.concept``); its answer carries the concept's own mask and that mask's box, so a concept competes in
the router's cross-validation like any route."""
from __future__ import annotations

import numpy as np

from ..concept.core import FitSettings, fit_concept, predict_logits, tidy_mask
from ..errors import ConfigError
from ..boxes import mask_to_box
from .base import Localization, Localizer, no_detection


class ConceptLocalizer(Localizer):
    """``fit``: a concept on the support embeddings (library defaults unless given); ``locate``: its mask (with
    ``tidy``: its largest component, holes filled) and the mask's box."""

    name = "concept"
    defaults = {"k": None, "epochs": None, "lr": None, "init": None, "seed": 0, "tidy": False}

    def _backend(self):
        from ..models.decoder_backend import DecoderBackend

        if self.model is None:
            raise ConfigError("concept: a concept is learned through a promptable model; pass model=...")
        return DecoderBackend(self.model)

    def settings(self) -> FitSettings:
        """Library defaults with the route's ``k``/``epochs``/``lr``/``init`` where set."""
        over = {k: self.params[k] for k in ("k", "epochs", "lr", "init") if self.params[k] is not None}
        return FitSettings().with_(**over)

    def _fit(self, cases, embeddings) -> None:
        """Learn the concept on the support cases' embeddings."""
        if embeddings is None:
            raise ConfigError("concept: fit needs the support cases' embeddings (support_embeddings)")
        self.backend = self._backend()
        self.concept = fit_concept(self.backend, embeddings, [c.mask for c in cases], self.settings(),
                                   seed=int(self.params["seed"]))

    def _locate(self, image, embedding) -> Localization:
        """The concept's mask on this image and its box (no detection when the mask is empty)."""
        if embedding is None:
            raise ConfigError("concept: locate needs the image's embedding")
        logits = predict_logits(self.backend, self.concept, [embedding])[0]
        mask = logits > 0
        if self.params["tidy"]:
            mask = tidy_mask(mask)
        if not mask.any():
            return no_detection("the concept predicts an empty mask", concept_flag=self.concept.flag)
        score = float(1 / (1 + np.exp(-logits[mask])).mean())
        return Localization(box=mask_to_box(mask), score=score, mask=mask,
                            extra={"area": int(mask.sum()), "concept_flag": self.concept.flag,
                                   "k": int(self.concept.tokens.shape[0])})
