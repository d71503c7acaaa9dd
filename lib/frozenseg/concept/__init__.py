"""Mask to Concept (M2C) on a frozen decoder: concept search, HUE uncertainty and the annotation loop.

The study notebook 11 runs on these (its loops, tables and the comparison with the other methods) lives in
:mod:`frozenseg.experiments.concept_search` and :mod:`frozenseg.experiments.concept_report`.
"""
from ..models.decoder_backend import DecoderBackend  # noqa: F401
from .core import (FLAG_COLLAPSED, FLAG_SINGLE, SAM3_TEXT_SETTINGS, Concept, ConceptCollapsedError,  # noqa: F401
                   FitSettings, fit_concept, predict, predict_logits)
from .hue import EMPTY_U, P_HI, P_LO, Hue, hue_from_logits, hue_scores, mean_uncertain_entropy  # noqa: F401
from .loop import (LOWEST_U_SPLIT, LoopConfig, LoopState, annotation_loop, ground_truth_annotator,  # noqa: F401
                   lowest_u_picks, merge_picks, select, start_indices, support)
