"""Fitting a collection's route on its labels (the router's cross-validation, as ``onboard`` does) and predicting an
item with its HUE uncertainty."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import evaluation as ev
from ..boxes import mask_to_box
from ..cache import case_key
from ..concept.hue import EMPTY_U, Hue, mean_uncertain_entropy
from ..data.types import Case
from ..errors import DataError
from ..io import write_json_atomic
from ..pipeline.router import ROUTING, choose_route, fit_route, get_route, route_scores
from .inputs import Collection, Item

MIN_LABELS_AUTO = 3       # the router's k-fold cross-validation holds each label out once (pipeline.router.folds)
MIN_LABELS_NAMED = 2      # a named route is fitted without a choice; its genome needs two labels
DOMAIN = "annotate"


@dataclass
class Fit:
    """The fitted route of one round: pipeline, the router's scores, the chosen route's CV Dice, and the keys."""

    pipeline: object
    scores: pd.DataFrame
    route: str
    cv_dice: float | None
    cv_sd: float | None
    labels_key: str
    fit_key: str
    n_labels: int


def labelled_cases(collection: Collection) -> list[Case]:
    """The labels the router sees: each labelled 2D image with a foreground, and each labelled slice (one with a
    foreground) of a labelled volume or series, as onboard takes them."""
    cases = []
    for it in collection.labelled:
        if it.kind == "image":
            if it.mask.any():
                cases.append(Case(it.name, DOMAIN, it.image, it.mask, source="folder"))
            continue
        for z in np.flatnonzero(it.mask.any(axis=(0, 1))):
            cases.append(Case(f"{it.name}_z{int(z):03d}", DOMAIN, np.repeat(it.image[:, :, z, None], 3, axis=2),
                              it.mask[:, :, z].copy(), source="folder", slice_index=int(z), volume_id=it.name))
    return cases


def check_labels(collection: Collection, cases: list[Case], route: str) -> None:
    """Raise DataError (naming masks/ and how many more are needed) when there are too few labels."""
    need = MIN_LABELS_AUTO if route == "auto" else MIN_LABELS_NAMED
    if len(cases) >= need:
        return
    what = "labelled slices with a foreground" if any(it.kind != "image" for it in collection.items) \
        else "labelled images with a foreground"
    why = ("the route is chosen by cross-validation, each label held out once" if route == "auto"
           else f"route {route!r} fits its genome on two labels or more")
    raise DataError(collection.folder / "masks", f"{len(cases)} {what} found; at least {need} are needed ({why})",
                    f"draw masks for {need - len(cases)} more image(s) and save them as masks/<stem>.png "
                    "(or masks/<stem>.nii.gz for a volume or DICOM series)" + ("" if route != "auto" else
                                                                            "; or name a route with --route"))


def _key(obj) -> str:
    """sha256 of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def fit_collection(model, cases: list[Case], embeddings: list, state_dir: Path, route: str = "auto",
                   candidates=None, folds: int | None = None, genome_budget: int | None = None,
                   finalists: int | None = None, seed: int = 0, progress: bool = False) -> Fit:
    """Choose (``route="auto"``) or take the route, fit it on every label, and record the choice in
    ``state_dir/fit.json`` keyed by the labels and settings, so a resumed run reuses the choice."""
    budget = ROUTING["genome_budget"] if genome_budget is None else genome_budget
    settings = {"route": route, "candidates": [getattr(c, "domain", c) for c in candidates or []], "folds": folds,
                "genome_budget": budget, "finalists": finalists, "seed": seed, "model": model.cache_id}
    labels_key = _key({"labels": [case_key(c) for c in cases], **settings})
    state_path = state_dir / "fit.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    kw = {"folds_k": folds, "genome_budget": genome_budget, "finalists": finalists, "progress": progress}
    if state.get("labels_key") == labels_key:
        scores = pd.DataFrame(state["scores"])
        chosen = get_route(state["route"])
    elif route == "auto":
        chosen, scores = choose_route(model, cases, embeddings, candidates, seed, **kw)
    else:
        chosen = get_route(route)
        scores = route_scores(model, cases, embeddings, [route], seed, **kw) if len(cases) >= MIN_LABELS_AUTO \
            else pd.DataFrame()
    write_json_atomic(state_path, {"labels_key": labels_key, "route": chosen.domain,
                                   "scores": scores.to_dict(orient="records")})
    pipe = fit_route(chosen, model, cases, embeddings, budget, seed)
    row = scores[scores.chosen] if len(scores) else scores
    cv = (float(row["mean"].iloc[0]), float(row["sd"].iloc[0])) if len(row) else (None, None)
    fit_key = _key({"labels_key": labels_key, "route": chosen.__dict__, "params": pipe.params})
    return Fit(pipe, scores, chosen.domain, cv[0], cv[1], labels_key, fit_key, len(cases))


def mask_hue(model, embedding, mask: np.ndarray) -> Hue:
    """HUE of a deployed mask: U = (1 - IoU(mask, the decoder's mask for the mask's own box)) + the mean binary
    entropy of that box prompt's logits over its uncertain pixels. A pipeline route's final mask comes out of
    gated skills and has no logits of its own, so both terms come from re-prompting the frozen decoder with the
    final mask's box (the same box re-prompt HUE makes for a concept's mask); an empty mask gets EMPTY_U."""
    if not mask.any():
        return Hue(u=EMPTY_U, box_iou=float("nan"), entropy=0.0, empty_mask=True)
    logits = model.decode(embedding, boxes=np.asarray(mask_to_box(mask), np.float64)).logits[0]
    ov = ev.iou(mask, logits > 0)
    ent = mean_uncertain_entropy(logits)
    return Hue(u=(1.0 - ov) + ent, box_iou=ov, entropy=ent, empty_mask=False)


def predict_item(item: Item, fit: Fit, model, cache) -> tuple[np.ndarray, Hue]:
    """The deployed mask of one item (every slice of a volume) in its working grid, and its HUE (a volume's: the
    mean of its slices with a non-empty mask; EMPTY_U when every slice is empty)."""
    masks, hues = [], []
    for image in item.slices():
        emb = cache.get(model, image)
        m = np.asarray(fit.pipeline.run(image, emb).final, bool)
        masks.append(m)
        hues.append(mask_hue(model, emb, m))
    if item.kind == "image":
        return masks[0], hues[0]
    full = [h for h in hues if not h.empty_mask]
    if not full:
        return np.stack(masks, axis=-1), Hue(u=EMPTY_U, box_iou=float("nan"), entropy=0.0, empty_mask=True)
    return np.stack(masks, axis=-1), Hue(u=float(np.mean([h.u for h in full])),
                                         box_iou=float(np.mean([h.box_iou for h in full])),
                                         entropy=float(np.mean([h.entropy for h in full])), empty_mask=False)
