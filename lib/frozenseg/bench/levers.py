"""Offline harness for the CPG route's localization levers (issue 22): each route variant scored by k-fold
cross-validation on the N labelled train images (the router's ``cv_dice``: the choice rule) and, for information
only, by its held-out test Dice; embeddings come from the study's cache and decoder answers are memoised on disk,
so a rerun of a variant costs only the prompts it has not decoded before.

    python -m frozenseg.bench.levers --profile sample --domains kvasir isic --variants base knn flip

Genome fits are left out (``--genome-budget`` sets one): the levers are compared at the route's fixed parameters.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import pickle
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation.metrics import dice
from ..io import atomic_path
from ..models.base import Prediction
from ..pipeline.core import Route
from ..pipeline.router import cv_dice, get_route, fit_route

# name -> (localizer params over the route's, skill replacements {old: [new, ...]} or None)
VARIANTS = {
    "base": ({}, None),
    "knn": ({"transfer": "knn"}, None),
    "flip": ({"flip": True}, None),
    "colour": ({"colour_weight": 0.3}, None),
    "peaks": ({"peaks": 3}, {"prior_select": ["peak_select"]}),
    "evolve": ({}, {"prior_select": ["prior_select", "prompt_evolve"]}),
}


def variant(route: Route, name: str, spec=None) -> Route:
    """``route`` with one lever (a VARIANTS entry, or ``spec`` = (localizer params, skill replacements)) applied;
    names joined by '+' stack levers."""
    loc, skills = dict(route.localizer), list(route.skills)
    for part in name.split("+"):
        params, swap = spec if spec is not None else VARIANTS[part]
        loc.update(params)
        for old, new in (swap or {}).items():
            i = skills.index(old)
            skills = skills[:i] + list(new) + skills[i + 1:]
    return replace(route, domain=f"{route.domain}:{name}", localizer=loc, skills=skills)


class MemoModel:
    """A PromptableModel whose ``decode`` answers are memoised by (embedding content, prompts) in memory and in a
    pickle at ``path`` (masks bit-packed; low-resolution logits are not kept)."""

    def __init__(self, model, path: Path):
        self._model, self._path, self._ids = model, Path(path), {}
        self._memo = pickle.loads(self._path.read_bytes()) if self._path.is_file() else {}
        self.calls = self.hits = 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def _emb_id(self, emb) -> str:
        k = id(emb)
        if k not in self._ids:
            self._ids[k] = (hashlib.sha1(np.ascontiguousarray(emb.features).tobytes()).hexdigest()[:16], emb)
        return self._ids[k][0]

    def decode(self, emb, boxes=None, points=None, point_labels=None, mask_input=None, sparse_embeddings=None,
               multimask: bool = False) -> Prediction:
        """The wrapped model's decode, memoised (mask_input and sparse embeddings bypass the memo)."""
        if mask_input is not None or sparse_embeddings is not None:
            return self._model.decode(emb, boxes, points, point_labels, mask_input, sparse_embeddings, multimask)
        key = (self._emb_id(emb), *(None if a is None else np.asarray(a, np.float32).tobytes()
                                    for a in (boxes, points, point_labels)), bool(multimask))
        self.calls += 1
        if key in self._memo:
            self.hits += 1
            packed, shape, iou = self._memo[key]
            m = np.unpackbits(packed)[: int(np.prod(shape))].reshape(shape).astype(bool)
            return Prediction(logits=np.where(m, 1.0, -1.0).astype(np.float32), iou=iou,
                              low_res=np.zeros((len(m), 1, 1), np.float32))
        pred = self._model.decode(emb, boxes, points, point_labels, None, None, multimask)
        self._memo[key] = (np.packbits(pred.masks), pred.masks.shape, pred.iou)
        return pred

    def save(self) -> None:
        """Write the memo (atomically)."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._path) as tmp:
            Path(tmp).write_bytes(pickle.dumps(self._memo))


def score_variant(route: Route, model, labelled, lembs, tests, tembs, folds: int, seed: int,
                  genome_budget: int = 0) -> dict:
    """CV Dice on the labels (mean over the labelled cases, each held out once) and test Dice of the route fitted
    on every label; per-test-case Dice kept for failure analysis."""
    t0 = time.perf_counter()
    cv = cv_dice(route, model, labelled, lembs, folds, genome_budget, seed)
    pipe = fit_route(route, model, labelled, lembs, genome_budget, seed)
    per, loc = [], []
    for c, e in zip(tests, tembs):
        tr = pipe.run(c.image, e)
        per.append(dice(tr.final, c.mask))
        loc.append(dice(tr.stages[0].mask, c.mask))
    return {"cv_dice": float(cv.dice.mean()), "cv_sd_cases": float(cv.dice.std()), "test_dice": float(np.mean(per)),
            "test_localize_dice": float(np.mean(loc)), "n_labels": len(labelled), "n_test": len(tests),
            "test_per_case": [round(float(d), 4) for d in per], "seconds": round(time.perf_counter() - t0, 1),
            "params": copy.deepcopy(pipe.params)}


def run(profile: str, domains, variants, seed: int = 0, n_labels: int = 10, folds: int = 5, genome_budget: int = 0,
        memo_dir: str | Path = "/tmp/frozenseg-levers") -> pd.DataFrame:
    """One row per domain x variant (see :func:`score_variant`)."""
    from ..experiments.budgets import label_sets, settings
    from ..experiments.domain import test_cases
    from ..study import setup

    st = setup(profile=profile, seeds=(seed,), domains=list(domains), verbose=False)
    rows = []
    for dom in domains:
        labelled = label_sets(st.data(dom).train, n_labels, seed, settings(st.profile))[0]
        tests = test_cases(st, dom)
        lembs, tembs = st.embeddings(labelled), st.embeddings(tests)
        model = MemoModel(st.model, Path(memo_dir) / f"decodes-{profile}-{dom}.pkl")
        for name in variants:
            r = score_variant(variant(get_route(dom), name), model, labelled, lembs, tests, tembs, folds, seed,
                              genome_budget)
            rows.append({"domain": dom, "variant": name, "seed": seed, **r})
            print(f"{dom:7s} {name:16s} cv {r['cv_dice']:.3f}  test {r['test_dice']:.3f} "
                  f"(localize {r['test_localize_dice']:.3f})  {r['seconds']}s", flush=True)
            model.save()
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    """Command line: score variants, write a JSON table."""
    ap = argparse.ArgumentParser(prog="python -m frozenseg.bench.levers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="sample")
    ap.add_argument("--domains", nargs="+", default=["kvasir", "isic"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--genome-budget", type=int, default=0)
    ap.add_argument("--out", default="/tmp/frozenseg-levers/levers.json")
    a = ap.parse_args(argv)
    df = run(a.profile, a.domains, a.variants, a.seed, folds=a.folds, genome_budget=a.genome_budget)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_json(a.out, orient="records", indent=1)
    print(df[["domain", "variant", "cv_dice", "test_dice", "test_localize_dice", "n_labels", "n_test"]])


if __name__ == "__main__":
    main()
