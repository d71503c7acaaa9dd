"""Routes: the per-domain topology read from routes.yaml, a GT-free router that picks one from a few labels, and
``onboard`` -- a new domain from a folder of images, ~10 labelled masks and a routing choice, in one call."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from ..errors import ConfigError
from .. import evaluation as ev
from ..evaluation.metrics import dice
from .core import Pipeline, Route

ROUTES_FILE = Path(__file__).with_name("routes.yaml")


@functools.lru_cache(maxsize=None)
def _load(path: str) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def load_routes(path: str | Path | None = None) -> dict[str, Route]:
    """Every route in ``routes.yaml`` (or another file with the same layout)."""
    raw = _load(str(path or ROUTES_FILE))
    out = {}
    for name, r in raw.items():
        unknown = set(r) - {"localizer", "skills", "gate", "genome", "params", "note", "candidates"}
        if unknown or "localizer" not in r:
            raise ConfigError(f"route {name!r} in {path or ROUTES_FILE}: needs 'localizer'; unknown keys {sorted(unknown)}")
        bad = [c for c in r.get("candidates") or [] if c not in raw]
        if bad:
            raise ConfigError(f"route {name!r} in {path or ROUTES_FILE}: candidate route(s) {bad} are not in the file; "
                              f"known: {sorted(raw)}")
        out[name] = Route(domain=name, localizer=dict(r["localizer"]), skills=list(r.get("skills") or []),
                          gate=dict(r.get("gate") or {}), genome={k: list(v) for k, v in (r.get("genome") or {}).items()},
                          params=dict(r.get("params") or {}), note=r.get("note", ""))
    return out


def get_route(name: str, path: str | Path | None = None) -> Route:
    """One route by name (a domain, or 'agnostic'); unknown names list the known ones."""
    routes = load_routes(path)
    if name not in routes:
        raise ConfigError(f"no route {name!r}; known routes: {sorted(routes)} (add one to {path or ROUTES_FILE})")
    return routes[name]


def candidate_routes(domain: str, path: str | Path | None = None) -> list[Route]:
    """The routes a domain chooses its deployed one from (its entry's ``candidates`` in routes.yaml, the domain's own
    route when it lists none); the choice is made by cross-validation on the labels
    (frozenseg.experiments.route_choice)."""
    get_route(domain, path)
    names = _load(str(path or ROUTES_FILE))[domain].get("candidates") or [domain]
    return [get_route(n, path) for n in names]


def with_localizer(route: Route, **params) -> Route:
    """A copy of ``route`` with localizer parameters replaced, e.g. ``backend="llm"`` (None keeps the route's own);
    checked now, so a bad name or a missing LLM setting fails before any work."""
    from dataclasses import replace

    from ..localizers import make_localizer

    params = {k: v for k, v in params.items() if v is not None}
    if not params:
        return route
    loc = {**route.localizer, **params}
    make_localizer(loc["name"], **{k: v for k, v in loc.items() if k != "name"})
    return replace(route, localizer=loc)


ROUTING = {"folds": 5, "genome_budget": 6, "finalists": 2}   # onboarding's defaults (profiles may set their own)


def folds(n: int, k: int, seed: int) -> list[list[int]]:
    """``k`` seeded, disjoint held-out folds covering every one of ``n`` labelled cases once (k-fold)."""
    if n < 3:
        raise ConfigError(f"routing needs at least 3 labelled cases, got {n}")
    k = max(2, min(int(k), n))
    order = np.random.default_rng([int(seed), 0xF01D]).permutation(n)
    return [sorted(int(i) for i in order[j::k]) for j in range(k)]


def fit_route(route: Route, model, cases, embeddings, genome_budget: int = 0, seed: int = 0) -> Pipeline:
    """A route fitted as it is deployed: prior and localizer on the labelled cases, then (``genome_budget`` > 0 and
    two or more labels) its genome on the same cases, leave one out, within at most ``genome_budget`` evaluations."""
    from .genome import MAX_GENOME_LABELS, fit_genome

    pipe = Pipeline(route, model).fit(cases, embeddings)
    if genome_budget > 0 and route.genome and len(cases) >= 2:
        k = min(len(cases), MAX_GENOME_LABELS)
        fit_genome(pipe, cases[:k], embeddings[:k], budget=genome_budget, seed=seed, support=cases,
                   support_embeddings=embeddings)
    return pipe


def cv_dice(route: Route, model, cases, embeddings, k: int = 5, genome_budget: int = 0, seed: int = 0) -> pd.DataFrame:
    """Held-out Dice of every labelled case (k-fold: each case scored once by the route fitted, as deployed, on
    the other folds); one row per case with its fold. Labels only, never test cases."""
    rows = []
    for f, held in enumerate(folds(len(cases), k, seed)):
        rest = [i for i in range(len(cases)) if i not in held]
        pipe = fit_route(route, model, [cases[i] for i in rest], [embeddings[i] for i in rest], genome_budget, seed)
        rows += [{"fold": f, "case_id": cases[i].case_id,
                  "dice": dice(pipe.run(cases[i].image, embeddings[i]).final, cases[i].mask)} for i in held]
    return pd.DataFrame(rows)


def route_scores(model, cases, embeddings, candidates=None, seed: int = 0, folds_k: int | None = None,
                 genome_budget: int | None = None, finalists: int | None = None,
                 progress: bool = False) -> pd.DataFrame:
    """Every candidate route scored on the labels by k-fold cross-validation, in two stages: all candidates fitted
    without their genome ('screen'), then the ``finalists`` best refitted with their genome on each fold, as they are
    deployed ('final'). One row per route and stage: mean held-out Dice over the labelled cases, its sd across
    folds, the per-fold means, and which route is chosen (the best finalist)."""
    k = ROUTING["folds"] if folds_k is None else folds_k
    budget = ROUTING["genome_budget"] if genome_budget is None else genome_budget
    top = ROUTING["finalists"] if finalists is None else finalists
    routes = _candidates(candidates)
    # routes with the same definition under two names (e.g. isic and kvasir) are scored once and share the scores;
    # the finalists are the best distinct definitions
    same = {}
    for n, r in routes.items():
        same.setdefault(_definition(r), []).append(n)
    names = [group[0] for group in same.values()]
    twins = {group[0]: group[1:] for group in same.values()}
    bar = tqdm(total=len(names) + (min(max(1, top), len(names)) if budget > 0 else 0), desc="route choice",
               unit="route", disable=not progress)
    rows = []
    for n in names:
        bar.set_postfix_str(n)
        rows.append(_score_row(n, "screen", cv_dice(routes[n], model, cases, embeddings, k, 0, seed)))
        bar.update()
    screen = sorted(rows, key=lambda r: -r["mean"])
    if budget > 0:
        for r in screen[:max(1, top)]:                # a route without a genome is deployed as it was screened
            bar.set_postfix_str(f"{r['route']} + genome")
            cv = cv_dice(routes[r["route"]], model, cases, embeddings, k, budget, seed) if routes[r["route"]].genome \
                else None
            rows.append(_score_row(r["route"], "final", cv) if cv is not None else {**r, "stage": "final"})
            bar.update()
    bar.close()
    rows = [x for r in rows for x in [r] + [{**r, "route": t, "same_as": r["route"]} for t in twins[r["route"]]]]
    df = pd.DataFrame(rows)
    final = df[df.stage == "final"] if (df.stage == "final").any() else df
    best = final.loc[final["mean"].idxmax(), "route"]
    return df.assign(chosen=(df.route == best) & (df.stage == final.stage.iloc[0]), genome_budget=budget, folds=k)


def _definition(route: Route) -> str:
    """What a route does, without its name and note: two routes with the same definition score the same."""
    import json

    return json.dumps([route.localizer, route.skills, route.gate, route.genome, route.params], sort_keys=True,
                      default=str)


def _candidates(candidates) -> dict[str, Route]:
    """Candidate routes by name: names from routes.yaml or Route objects (e.g. a drawer with another backend);
    None: every route of the file."""
    known = load_routes()
    out = {}
    for c in (candidates or list(known)):
        if not isinstance(c, Route) and c not in known:
            raise ConfigError(f"unknown candidate route(s) {[c]}; known: {sorted(known)}")
        r = c if isinstance(c, Route) else known[c]
        if r.domain in out:
            raise ConfigError(f"candidate route {r.domain!r} is given twice; name each candidate once")
        out[r.domain] = r
    return out


def _score_row(route: str, stage: str, cv: pd.DataFrame) -> dict:
    """Mean held-out Dice of one route and stage, with its spread across folds."""
    per_fold = cv.groupby("fold").dice.mean()
    return {"route": route, "stage": stage, "mean": float(cv.dice.mean()), "sd": ev.mean_sd(per_fold)[1],
            "fold_means": [round(float(v), 4) for v in per_fold], "cases": len(cv)}


def choose_route(model, cases, embeddings, candidates=None, seed: int = 0, **kw) -> tuple[Route, pd.DataFrame]:
    """The route with the best cross-validated Dice on the few labelled cases (``route_scores``), and every route's
    scores with their spread, so a user sees how sure the choice is."""
    scores = route_scores(model, cases, embeddings, candidates, seed, **kw)
    return _candidates(candidates)[scores.loc[scores.chosen, "route"].iloc[0]], scores


def onboard(folder: str | Path, model, n_labels: int = 10, route: str = "auto", seed: int = 0, cache=None,
            **routing):
    """A fitted Pipeline for a new domain: ``folder`` holds images/ and masks/ (see frozenseg.data.load_folder);
    ``n_labels`` of its masks are used. ``route="auto"`` chooses it by cross-validation on those labels
    (``route_scores``: every label held out once, finalists fitted with their genome as deployed); the chosen or
    named route is then fitted on all of them, genome included. Returns (pipeline, scores table; empty when
    named)."""
    from ..cache import EmbeddingCache
    from ..data import Volume, load_folder
    from ..data.loaders import folder_domain
    from ..data.splits import subsample_train

    domain = folder_domain(folder)
    items = load_folder(folder, domain)
    cases = [v.slice_case(z) for v in items if isinstance(v, Volume) for z in v.foreground_slices()]
    cases += [c for c in items if not isinstance(c, Volume) and c.mask.any()]
    labelled = subsample_train(cases, min(n_labels, len(cases)), seed)
    embs = (cache or EmbeddingCache()).get_many(model, [c.image for c in labelled], desc="onboard encoding")
    scores = pd.DataFrame()
    if route == "auto":
        chosen, scores = choose_route(model, labelled, embs, seed=seed, **routing)
    else:
        chosen = get_route(route)
    chosen = Route(**{**chosen.__dict__, "domain": domain})
    budget = routing.get("genome_budget", ROUTING["genome_budget"])
    return fit_route(chosen, model, labelled, embs, budget, seed), scores


def scores_table(scores: pd.DataFrame) -> pd.DataFrame:
    """The router's scores for display: route, stage, held-out Dice ± sd across folds, per-fold means, chosen."""
    if scores.empty:
        return scores
    twin = scores["same_as"] if "same_as" in scores else pd.Series([None] * len(scores), index=scores.index)
    route = [r if not isinstance(t, str) else f"{r} (= {t})" for r, t in zip(scores.route, twin)]
    return pd.DataFrame({"route": route, "stage": scores.stage.map({"screen": "all routes, no genome",
                                                                   "final": "finalists, genome fitted"}),
                         "held-out Dice": [f"{m:.3f} ± {s:.3f}" for m, s in zip(scores["mean"], scores["sd"])],
                         "per fold": [", ".join(f"{v:.2f}" for v in f) for f in scores.fold_means],
                         "chosen": ["✓" if c else "" for c in scores.chosen]})
