"""The genome: the fitted pipeline parameters. A handful of them (box margin, skill thresholds, gate weights) are
fit on at most 40 labelled train cases by a derivative-free optimiser (scipy's bounded Powell), never on test
cases. :func:`fit_powell` is the one fit, for 2D routes (:func:`fit_genome`) and the spleen volume pipeline
(``volume.genome``) alike: bounded Powell of a given objective over a spec, its record cached on disk under a key
built from what the caller says the fit depends on. Localizations and decoder calls are memoized per case, so
each evaluation costs only the decodes it has not seen before."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from .. import paths
from ..errors import ConfigError
from ..evaluation.metrics import dice
from ..io import write_json_atomic
from .core import Pipeline, apply_localizer_params  # noqa: F401  (apply_localizer_params: public here too)

log = logging.getLogger(__name__)

MAX_GENOME_LABELS = 40


def code_hash(files) -> str:
    """Hash of the code a genome fit runs (``files``, paths relative to this package, plus every localizer and the
    concept fit the concept localizer runs): a cached genome is refit when any of it changes."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    concept = [here.parent / "concept" / "core.py", here.parent / "models" / "decoder_backend.py"]   # concept route
    for p in [here / f for f in files] + sorted((here.parent / "localizers").glob("*.py")) + concept:
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def cache_key(depends_on: dict) -> str:
    """The on-disk key of a genome fit: a hash of what it depends on (JSON, sorted keys)."""
    blob = json.dumps(depends_on, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def genome_bounds(spec: dict) -> tuple[list, np.ndarray, np.ndarray]:
    """(names, low, high) of a genome spec {name: (low, high)}; low < high or ConfigError."""
    names = list(spec)
    lo = np.array([spec[n][0] for n in names], float)
    hi = np.array([spec[n][1] for n in names], float)
    if np.any(hi <= lo):
        raise ConfigError(f"genome bounds must be [low, high] with low < high: {spec}")
    return names, lo, hi


def fit_powell(objective, spec: dict, start: dict, budget: int, cache: dict | None = None, name: str = "",
               use_cache: bool = True, extra=None) -> dict:
    """The one genome fit: bounded Powell of ``objective(values) -> mean Dice`` ({parameter: value} in, higher is
    better) over ``spec`` ({parameter: (low, high)}) from ``start``, at most ``budget`` evaluations.

    With ``cache`` (a JSON-able dict of what the fit depends on) the record is read from
    ``<cache root>/genomes/[<name>-]<key>.json`` when present (``use_cache``) and written there after a fit.
    ``extra`` (a dict, or a function called after the search) adds fields to the record. Returns the record:
    params, start/fit Dice, evals, history, the extra fields, seconds and ``cached``."""
    names, lo, hi = genome_bounds(spec)
    path = None
    if cache is not None:
        key = cache_key(cache)
        path = paths.cache_root() / "genomes" / (f"{name}-{key}.json" if name else f"{key}.json")
        if use_cache and path.is_file():
            return {**json.loads(path.read_text()), "cached": True}
    x0 = np.clip((np.array([start[n] for n in names], float) - lo) / (hi - lo), 0, 1)
    t0 = time.perf_counter()
    rec = powell_search(lambda x: 1.0 - objective(dict(zip(names, map(float, lo + np.clip(x, 0, 1) * (hi - lo))))),
                        names, lo, hi, x0, budget)
    rec = {**rec, **((extra() if callable(extra) else extra) or {}), "seconds": round(time.perf_counter() - t0, 2)}
    if path is not None:
        write_json_atomic(path, rec)
    return {**rec, "cached": False}


def genome_objective(pipelines, frames, locs, gts):
    """objective(values) = mean Dice of the final masks with the genome ``values``; case i runs through
    ``pipelines[i]`` (its leave-one-out pipeline, or the shared one)."""
    def f(vals: dict) -> float:
        moved = False
        for p in dict.fromkeys(pipelines):     # each distinct pipeline once
            p.params.update(vals)
            moved = apply_localizer_params(p, vals)
        for p, fr in zip(pipelines, frames):   # the gate may change with the genome
            fr.gate = p.gate
        d = [dice(p.run(fr.image, fr.embedding, frame=fr, localized=p.localize(fr, None if moved else loc)).final, gt)
             for p, fr, loc, gt in zip(pipelines, frames, locs, gts)]
        return float(np.mean(d))
    return f


def loo_pipelines(pipeline, cases, support, support_embeddings, strict: bool = True) -> list:
    """Per case: a pipeline fit on the supports without that case (leave one out) when the case is one of the
    supports, so no case is localized with itself in the support set; else the shared ``pipeline``. A case that is
    the only support raises ConfigError (``strict``) or keeps the shared pipeline."""
    if support is None:
        return [pipeline] * len(cases)
    ids = [c.case_id for c in support]
    out = []
    for c in cases:
        if c.case_id not in ids:
            out.append(pipeline)
            continue
        rest = [(s, e) for s, e in zip(support, support_embeddings) if s.case_id != c.case_id]
        if not rest and not strict:
            out.append(pipeline)
            continue
        if not rest:
            raise ConfigError(f"genome: case {c.case_id} is the only support; a leave-one-out fit needs two or more "
                              "labelled cases")
        p = Pipeline(pipeline.route, pipeline.model, params=dict(pipeline.params))
        out.append(p.fit([s for s, _ in rest], [e for _, e in rest]))
    return out


def fit_genome(pipeline, cases, embeddings, budget: int = 40, seed: int = 0, support=None,
               support_embeddings=None, cache: dict | None = None, use_cache: bool = True,
               extra: dict | None = None) -> dict:
    """Fit the route's genome on labelled cases (:func:`fit_powell`); returns {'params', 'start_dice', 'fit_dice',
    'evals', 'history', 'loo_cases', ...}.

    The pipeline must already be fitted (prior and localizer) on ``support``; when the supports are given, a genome
    case that is also a support is localized by a pipeline fit on the other supports (leave one out). The
    pipeline's params are left at the best values found. ``cache`` (what the fit depends on), ``use_cache`` and
    ``extra`` (fields added to the record) go to :func:`fit_powell`; the leave-one-out pipelines are built on the
    first evaluation, so a cached genome builds none.
    """
    spec = pipeline.route.genome
    if not spec:
        return {"params": {}, "start_dice": float("nan"), "fit_dice": float("nan"), "evals": 0, "history": []}
    keep = [i for i, c in enumerate(cases) if c.mask.any()]
    cases, embeddings = [cases[i] for i in keep], [embeddings[i] for i in keep]
    if not cases:
        raise ConfigError("genome: no labelled case with a non-empty mask to fit on")
    if len(cases) > MAX_GENOME_LABELS:
        raise ConfigError(f"genome: {len(cases)} labelled cases given; the study fits it on at most "
                          f"{MAX_GENOME_LABELS} (pass a subset)")
    genome_bounds(spec)
    start = {n: pipeline.params.get(n, _skill_default(pipeline, n)) for n in spec}
    built: dict = {}

    def objective(vals: dict) -> float:
        """Mean Dice of the genome cases with these values (the leave-one-out pipelines are built on the first call)."""
        if not built:
            pipes = loo_pipelines(pipeline, cases, support, support_embeddings)
            frames = [p.frame(c.image, e) for p, c, e in zip(pipes, cases, embeddings)]
            locs = [p.localizer.locate(fr.image, fr.embedding) for p, fr in zip(pipes, frames)]
            built.update(pipes=pipes, f=genome_objective(pipes, frames, locs, [c.mask for c in cases]))
        return built["f"](vals)

    rec = fit_powell(objective, spec, start, budget, cache=cache, use_cache=use_cache,
                     extra=lambda: {"loo_cases": sum(p is not pipeline for p in built["pipes"]), **(extra or {})})
    pipeline.params.update(rec["params"])
    apply_localizer_params(pipeline, rec["params"])
    log.info("genome %s: Dice %.3f -> %.3f in %d evaluations", pipeline.route.domain, rec["start_dice"],
             rec["fit_dice"], rec["evals"])
    return rec


def powell_search(f, names, lo, hi, x0, budget: int) -> dict:
    """Bounded Powell (scipy) of ``f(x)`` = 1 - Dice over x in [0, 1]^d, value = lo + x (hi - lo), at most
    ``budget`` evaluations (the search inside :func:`fit_powell`). The result is the best point evaluated (the
    start unless something beats it; Powell stopped by the budget mid line search may hold a worse one). Returns the
    genome record."""
    history: list[float] = []
    best = [np.asarray(x0, float), np.inf]

    def tracked(x):
        v = f(x)
        history.append(v)
        if v < best[1]:
            best[:] = [np.array(x, float), v]
        return v

    start = tracked(x0)
    minimize(tracked, x0, method="Powell", bounds=[(0, 1)] * len(names),
             options={"maxfev": max(1, budget - 1), "xtol": 1e-2, "ftol": 1e-4})
    best_x, best_f = best
    vals = lo + np.clip(best_x, 0, 1) * (hi - lo)
    return {"params": dict(zip(names, map(float, vals))), "start_dice": 1 - start, "fit_dice": 1 - best_f,
            "evals": len(history), "history": [1 - h for h in history]}


def _skill_default(pipeline, name: str) -> float:
    """Default value of a genome parameter: a skill's default, a gate weight of 1, or 0 for box_margin."""
    if "." in name:
        head, key = name.split(".", 1)
        if head == "localizer":
            return float(pipeline.localizer.params[key])
        if head == "gate":
            return float(pipeline.gate.weights.get(key, 1.0))
        for s in pipeline.skills:
            if s.name == head:
                return float(s.defaults[key])
        raise ConfigError(f"genome parameter {name!r} names no skill of this route ({pipeline.route.skills})")
    return 0.0
