"""Which route a domain deploys: chosen among its candidates (routes.yaml ``candidates``) by the router's k-fold
cross-validation on exactly the labels the pipeline uses at a budget N (its supports and genome cases), never on a
test case; cached on disk like the genome, so a rerun does not redo it."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pandas as pd

from .. import paths
from ..cache import case_key
from ..io import write_json_atomic
from ..localizers import feature_key
from ..pipeline.core import Route
from ..pipeline.genome import code_hash
from ..pipeline.router import ROUTING, candidate_routes, get_route, load_routes, route_scores
from .budgets import GENOME_CODE, label_sets, settings

CHOICE_CODE = GENOME_CODE + ("router.py",)   # of frozenseg.pipeline; this module is hashed beside them
CV, SINGLE, TOO_FEW, GIVEN = ("cross-validation on the labels", "single candidate, no cross-validation",
                              "fewer than 3 labels: the first candidate, no cross-validation",
                              "given by the caller, not chosen by cross-validation")


def choice_settings(profile) -> dict:
    """The router's cross-validation sizes from the profile's pipeline dict (folds, genome budget, finalists)."""
    s = settings(profile)
    return {"folds": int(s.get("router_folds", ROUTING["folds"])),
            "genome_budget": int(s.get("router_genome_budget", ROUTING["genome_budget"])),
            "finalists": int(s.get("router_finalists", ROUTING["finalists"]))}


def domain_candidates(domain: str, profile) -> list[Route]:
    """The routes a domain's deployed one is chosen from: its routes.yaml candidates, or, for a domain with no entry
    there (a user's folder), the profile's router candidates (``router_candidates``; default every route)."""
    if domain in load_routes():
        return candidate_routes(domain)
    return [get_route(n) for n in settings(profile).get("router_candidates") or list(load_routes())]


def labelled_cases(train, n_labels: int, seed: int, s: dict) -> list:
    """The labels the pipeline uses at budget N: its supports and genome cases (``label_sets``), each once, in the
    order of the seeded draw."""
    support, gcases = label_sets(train, n_labels, seed, s)
    return list({c.case_id: c for c in support + gcases}.values())


def choose_on_labels(model, cases, embeddings, candidates: list[Route], seed: int,
                     rs: dict) -> tuple[str, pd.DataFrame, str]:
    """(chosen route name, the router's scores, how it was chosen) from labelled cases alone: one candidate needs no
    choice; with fewer than 3 labels no fold can be held out, so the first candidate stays; otherwise the best
    finalist of ``router.route_scores``."""
    names = [r.domain for r in candidates]
    if len(candidates) == 1:
        return names[0], pd.DataFrame(), SINGLE
    if len(cases) < 3:
        return names[0], pd.DataFrame(), TOO_FEW
    scores = route_scores(model, cases, embeddings, candidates, seed, rs["folds"], rs["genome_budget"], rs["finalists"])
    return str(scores.loc[scores.chosen, "route"].iloc[0]), scores, CV


def choice_key(candidates: list[Route], model, cases, rs: dict, seed: int) -> str:
    """Cache key of a choice: candidate route specs and the feature spaces they resolve to, model weights and
    device, the labels (ids, sizes, content hashes), router settings, seed and code."""
    blob = json.dumps({"routes": [r.__dict__ for r in candidates], "model": model.cache_id,
                       "features": [feature_key(r.localizer) for r in candidates],
                       "labels": [case_key(c) for c in cases], "settings": rs, "seed": seed,
                       "code": [code_hash(CHOICE_CODE), hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def route_choice(study, domain: str, seed: int, n_labels: int, candidates: list[Route] | None = None,
                 use_cache: bool = True) -> dict:
    """The deployed route of one domain, seed and budget N: {'route' (Route), 'name', 'how', 'scores' (the router's
    table, empty without a cross-validation), 'labels' (ids it saw), 'settings', 'seconds', 'cached'}. Candidates
    default to :func:`domain_candidates` (a folder domain is routed among the profile's router candidates)."""
    candidates = list(candidates or domain_candidates(domain, study.profile))
    data, rs = study.data(domain), choice_settings(study.profile)
    cases = labelled_cases(data.train, n_labels, seed, settings(study.profile))
    by_name = {r.domain: r for r in candidates}
    rec = {"labels": sorted(c.case_id for c in cases), "settings": rs, "n_labels": int(n_labels), "seed": seed}
    if len(candidates) == 1 or len(cases) < 3:
        name, scores, how = choose_on_labels(study.model, cases, [], candidates, seed, rs)
        return {**rec, "route": by_name[name], "name": name, "how": how, "scores": scores, "seconds": 0.0,
                "cached": False}
    path = paths.cache_root() / "route_choices" / f"{choice_key(candidates, study.model, cases, rs, seed)}.json"
    if use_cache and path.is_file():
        saved = json.loads(path.read_text())
        return {**rec, "route": by_name[saved["name"]], "name": saved["name"], "how": saved["how"],
                "scores": pd.DataFrame(saved["scores"]), "seconds": saved["seconds"], "cached": True}
    embs = study.embeddings(cases, desc=f"{domain} route choice")
    t0 = time.perf_counter()
    name, scores, how = choose_on_labels(study.model, cases, embs, candidates, seed, rs)
    seconds = round(time.perf_counter() - t0, 2)
    table = json.loads(scores.to_json(orient="records"))
    write_json_atomic(path, {"name": name, "how": how, "scores": table, "seconds": seconds, "domain": domain, **rec})
    return {**rec, "route": by_name[name], "name": name, "how": how, "scores": scores, "seconds": seconds,
            "cached": False}


def given_route(route: Route, n_labels: int, seed: int) -> dict:
    """The record of a route the caller fixed (e.g. ``deploy_drawer=True``): no choice was made."""
    return {"route": route, "name": route.domain, "how": GIVEN, "scores": pd.DataFrame(), "labels": [],
            "settings": {}, "n_labels": int(n_labels), "seed": seed, "seconds": 0.0, "cached": False}
