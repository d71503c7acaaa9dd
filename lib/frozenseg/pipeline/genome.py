"""The genome: a handful of pipeline parameters fit on at most 40 labelled train cases by a derivative-free
optimiser (scipy's bounded Powell), never on test cases. Localizations and decoder calls are memoized per case,
so each evaluation costs only the decodes it has not seen before."""
from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize

from ..errors import ConfigError
from ..evaluation.metrics import dice

log = logging.getLogger(__name__)

MAX_GENOME_LABELS = 40


def genome_objective(pipelines, frames, locs, gts, names, lo, hi):
    """f(x in [0, 1]^d) = 1 - mean Dice of the final masks with the decoded parameters; case i runs through
    ``pipelines[i]`` (its leave-one-out pipeline, or the shared one)."""
    def f(x: np.ndarray) -> float:
        vals = dict(zip(names, map(float, lo + np.clip(x, 0, 1) * (hi - lo))))
        moved = False
        for p in dict.fromkeys(pipelines):     # each distinct pipeline once
            p.params.update(vals)
            moved = apply_localizer_params(p, vals)
        for p, fr in zip(pipelines, frames):   # the gate may change with the genome
            fr.gate = p.gate
        d = [dice(p.run(fr.image, fr.embedding, frame=fr, localized=p.localize(fr, None if moved else loc)).final, gt)
             for p, fr, loc, gt in zip(pipelines, frames, locs, gts)]
        return 1.0 - float(np.mean(d))
    return f


def loo_pipelines(pipeline, cases, support, support_embeddings, strict: bool = True) -> list:
    """Per case: a pipeline fit on the supports without that case (leave one out) when the case is one of the
    supports, so no case is localized with itself in the support set; else the shared ``pipeline``. A case that is
    the only support raises ConfigError (``strict``) or keeps the shared pipeline."""
    from .core import Pipeline

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


def apply_localizer_params(pipeline, values: dict) -> bool:
    """Copy ``localizer.<param>`` genome values into the fitted localizer; True if any was given."""
    loc = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("localizer.")}
    for k, v in loc.items():
        if k not in pipeline.localizer.params:
            raise ConfigError(f"genome parameter localizer.{k}: {pipeline.localizer.name} has no parameter {k!r}; "
                              f"valid: {sorted(pipeline.localizer.params)}")
        pipeline.localizer.params[k] = v
    return bool(loc)


def fit_genome(pipeline, cases, embeddings, budget: int = 40, seed: int = 0, support=None,
               support_embeddings=None) -> dict:
    """Fit the route's genome on labelled cases; returns {'params', 'start_dice', 'fit_dice', 'evals', 'history',
    'loo_cases'}.

    The pipeline must already be fitted (prior and localizer) on ``support``; when the supports are given, a genome
    case that is also a support is localized by a pipeline fit on the other supports (leave one out). The
    pipeline's params are left at the best values found.
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
    names = list(spec)
    lo = np.array([spec[n][0] for n in names], float)
    hi = np.array([spec[n][1] for n in names], float)
    if np.any(hi <= lo):
        raise ConfigError(f"genome bounds must be [low, high] with low < high: {spec}")
    defaults = {n: pipeline.params.get(n, _skill_default(pipeline, n)) for n in names}
    x0 = np.clip((np.array([defaults[n] for n in names], float) - lo) / (hi - lo), 0, 1)
    pipes = loo_pipelines(pipeline, cases, support, support_embeddings)
    frames = [p.frame(c.image, e) for p, c, e in zip(pipes, cases, embeddings)]
    locs = [p.localizer.locate(fr.image, fr.embedding) for p, fr in zip(pipes, frames)]
    f = genome_objective(pipes, frames, locs, [c.mask for c in cases], names, lo, hi)
    rec = powell_search(f, names, lo, hi, x0, budget)
    pipeline.params.update(rec["params"])
    apply_localizer_params(pipeline, rec["params"])
    rec["loo_cases"] = sum(p is not pipeline for p in pipes)
    log.info("genome %s: Dice %.3f -> %.3f in %d evaluations", pipeline.route.domain, rec["start_dice"],
             rec["fit_dice"], rec["evals"])
    return rec


def powell_search(f, names, lo, hi, x0, budget: int) -> dict:
    """Bounded Powell (scipy) of ``f(x)`` = 1 - Dice over x in [0, 1]^d, value = lo + x (hi - lo), at most
    ``budget`` evaluations. The result is the best point evaluated (the start unless something beats it; Powell
    stopped by the budget mid line search may hold a worse one). Returns the genome record."""
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
