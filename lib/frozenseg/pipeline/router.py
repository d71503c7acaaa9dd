"""Routes: the per-domain topology read from routes.yaml, a GT-free router that picks one from a few labels, and
``onboard`` -- a new domain from a folder of images, ~10 labelled masks and a routing choice, in one call."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import yaml

from ..errors import ConfigError
from ..metrics import dice
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
        unknown = set(r) - {"localizer", "skills", "gate", "genome", "params", "note"}
        if unknown or "localizer" not in r:
            raise ConfigError(f"route {name!r} in {path or ROUTES_FILE}: needs 'localizer'; unknown keys {sorted(unknown)}")
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


def holdout_dice(route: Route, model, cases, embeddings, seed: int = 0, val_frac: float = 0.4) -> float:
    """Mean Dice of a route fit on part of the labelled cases and run on the rest (labels only, never test)."""
    n = len(cases)
    if n < 3:
        raise ConfigError(f"routing needs at least 3 labelled cases, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(val_frac * n)))
    val, fit = order[:n_val], order[n_val:]
    p = Pipeline(route, model).fit([cases[i] for i in fit], [embeddings[i] for i in fit])
    return float(np.mean([dice(p.run(cases[i].image, embeddings[i]).final, cases[i].mask) for i in val]))


def choose_route(model, cases, embeddings, candidates=None, seed: int = 0) -> tuple[Route, dict[str, float]]:
    """The candidate route with the best held-out Dice on the few labelled cases, and every candidate's score."""
    routes = load_routes()
    names = list(candidates or routes)
    scores = {n: holdout_dice(routes[n], model, cases, embeddings, seed) for n in names}
    best = max(scores, key=scores.get)
    return routes[best], scores


def onboard(folder: str | Path, model, n_labels: int = 10, route: str = "auto", seed: int = 0, cache=None):
    """A fitted Pipeline for a new domain: ``folder`` holds images/ and masks/ (see frozenseg.data.load_folder);
    ``n_labels`` of its masks are used, the route is chosen from them unless named. Returns (pipeline, scores)."""
    from ..cache import EmbeddingCache
    from ..data import load_folder
    from ..data.splits import subsample_train

    from ..data import Volume

    items = load_folder(folder, Path(folder).name)
    cases = [v.slice_case(z) for v in items if isinstance(v, Volume) for z in v.foreground_slices()]
    cases += [c for c in items if not isinstance(c, Volume)]
    labelled = subsample_train(cases, min(n_labels, len(cases)), seed)
    embs = (cache or EmbeddingCache()).get_many(model, [c.image for c in labelled], desc="onboard encoding")
    scores = {}
    if route == "auto":
        chosen, scores = choose_route(model, labelled, embs, seed=seed)
    else:
        chosen = get_route(route)
    chosen = Route(**{**chosen.__dict__, "domain": Path(folder).name})
    return Pipeline(chosen, model).fit(labelled, embs), scores
