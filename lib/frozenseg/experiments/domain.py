"""The per-domain experiment behind notebooks 02-05: fit a route on a few labelled train cases, run it on the
fixed test split, and record Dice after every stage beside a naive localizer and the GT-box oracle."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import evaluation as ev
from .. import paths
from ..boxes import mask_to_box
from ..cache import case_key
from ..localizers import feature_key
from ..pipeline.core import Pipeline, Route
from ..pipeline.genome import code_hash, fit_genome
from ..pipeline.router import get_route, load_routes
from .budgets import DEFAULTS, GENOME_CODE, budgets, label_sets, settings  # noqa: F401  (used by notebooks)
from .peers import fit_peers, peer_rows
from .route_choice import given_route, route_choice

log = logging.getLogger(__name__)

DEPLOYED, NAIVE, ORACLE = "deployed", "naive", "oracle"


def genome_depends_on(route: Route, model, support, genome_cases, budget: int) -> dict:
    """What a 2D genome fit depends on (its cache key): route, the feature space its localizer resolves to (not
    'auto'), model weights and device, the labelled cases (ids, sizes, image and mask hashes), the budget and the
    code."""
    return {"route": route.__dict__, "features": feature_key(route.localizer), "model": model.cache_id,
            "support": [case_key(c) for c in support], "genome": [case_key(c) for c in genome_cases],
            "budget": budget, "code": code_hash(GENOME_CODE)}


def fit_domain(study, domain: str, seed: int, route: Route | None = None, genome: bool = True,
               use_cache: bool = True, n_labels: int | None = None) -> tuple[Pipeline, dict]:
    """A fitted pipeline for one domain, seed and label budget N (default the largest budget), and its record:
    the genome (fit leave-one-out on the budget's genome cases, cached on disk by what it depends on;
    ``use_cache=False`` refits it) and ``labels``, the ids of every labelled case the pipeline used. ``route`` None:
    the domain's routes.yaml entry; a domain without one (a user's folder) is routed by cross-validation on the
    same labels (``route_choice``; the record's ``route_how`` says how)."""
    s = settings(study.profile)
    data = study.data(domain)
    n_labels = int(n_labels or max(budgets(study.profile, data)))
    routed, seen = {}, set()            # seen: the labels a route choice saw (counted as used)
    if route is None and domain not in load_routes():
        choice = route_choice(study, domain, seed, n_labels, use_cache=use_cache)
        route, routed, seen = choice["route"], {"route_how": choice["how"]}, set(choice["labels"])
    route = route or get_route(domain)
    support, gcases = label_sets(data.train, n_labels, seed, s)
    support_embs = study.embeddings(support, desc=f"{domain} support")
    pipe = Pipeline(route, study.model).fit(support, support_embs)
    used = {"n_labels": n_labels, **routed}
    if not (genome and route.genome) or len(support) < 2:     # a leave-one-out genome fit needs two labels
        ids = sorted({c.case_id for c in support} | seen)
        return pipe, {"params": {}, "evals": 0, "cached": False, **used, "labels": ids, "labels_used": len(ids)}
    ids = sorted({c.case_id for c in support + gcases} | seen)
    used.update(labels=ids, labels_used=len(ids))
    rec = fit_genome(pipe, gcases, study.embeddings(gcases, desc=f"{domain} genome"), budget=s["genome_budget"],
                     seed=seed, support=support, support_embeddings=support_embs, use_cache=use_cache,
                     cache=genome_depends_on(route, study.model, support, gcases, s["genome_budget"]),
                     extra={"genome_labels": len(gcases), "domain": domain, "seed": seed})
    return pipe, {**rec, **used}


def test_cases(study, domain: str) -> list:
    """The test units every method predicts (``ev.test_units``: the fixed test split, negatives included), cut to
    the profile's pipeline n_test when set."""
    return ev.test_units(study.data(domain), settings(study.profile)["n_test"])


def _row(base: dict, stage: str, index: int, mask, case, **extra) -> dict:
    """One scored row (``ev.score_case``: native resolution; HD95 for the deployed mask and the oracle)."""
    return {**base, "stage": stage, "method": stage, "stage_index": index,
            **ev.score_case(mask, case, with_hd95=stage in (DEPLOYED, ORACLE)), **extra}


def oracle_mask(study, case, embedding) -> np.ndarray:
    """The frozen decoder prompted with the case's GT box; an empty mask on a case without a target (no box)."""
    if not case.mask.any():
        return np.zeros(case.mask.shape, bool)
    return study.masks.decode_boxes(study.model, case.image, embedding, mask_to_box(case.mask)[None])[0][0]


def run_domain(study, domain: str, seed: int, notebook: str, keep_masks: bool = True,
               use_cache: bool = True, route: Route | None = None,
               n_labels: int | None = None, candidates: list[Route] | None = None) -> tuple[pd.DataFrame, dict]:
    """Rows (one per test unit x stage, plus naive, oracle, 'deployed' and the few-shot SAM peers of
    ``peers.PEERS``) at label budget N (default the largest) and the deployed masks by case id. The deployed route is chosen among the domain's ``candidates`` (None: its
    routes.yaml candidates) by cross-validation on this budget's labels (``choice.route_choice``), unless ``route``
    fixes it. Every row carries ``n_labels`` (the budget), ``labels_used`` (how many labelled cases the method used:
    the pipeline's supports, genome cases and the labels its route was chosen on; the naive route's supports; 0 for
    the GT-box oracle; each peer's supports), ``route`` and ``negative``. The 'deployed' row's ``seconds`` is the wall time of the
    pipeline on that image beyond the (cached) encoder."""

    n_labels = int(n_labels or max(budgets(study.profile, study.data(domain))))
    choice = (given_route(route, n_labels, seed) if route is not None
              else route_choice(study, domain, seed, n_labels, candidates, use_cache=use_cache))
    pipe, grec = fit_domain(study, domain, seed, route=choice["route"], use_cache=use_cache, n_labels=n_labels)
    naive, nrec = fit_domain(study, domain, seed, route=get_route("agnostic"), genome=False, n_labels=n_labels)
    peers = fit_peers(study, domain, seed, n_labels)
    used = len(set(grec["labels"]) | set(choice["labels"]))
    cases = test_cases(study, domain)
    embs = study.embeddings(cases, desc=f"{domain} test")
    rows, masks = [], {}
    for c, e in tqdm(list(zip(cases, embs)), desc=f"{domain} pipeline (seed {seed}, N={n_labels})", leave=False):
        base = {"domain": domain, "seed": seed, "case_id": c.case_id, "volume_id": c.volume_id,
                "slice_index": c.slice_index, "unit": "case", "source": study.source_of(domain),
                "localizer": pipe.route.localizer["name"], "route": choice["name"], "n_labels": n_labels,
                "labels_used": used}
        t0 = time.perf_counter()
        tr = pipe.run(c.image, e)
        seconds = time.perf_counter() - t0
        flag = tr.flag or ("" if tr.localization["flag"] == "ok" else tr.localization["flag"])
        for i, st in enumerate(tr.stages):
            rows.append(_row(base, st.name, i, st.mask, c, gate=st.gate, fired=st.fired, accepted=st.accepted,
                             origin=st.origin, flag=flag))
        rows.append(_row(base, DEPLOYED, len(tr.stages), tr.final, c, gate=tr.stages[-1].gate, flag=flag,
                         decoder_calls=tr.decoder_calls, seconds=seconds))
        nv = naive.run(c.image, e).stages[0]
        rows.append(_row({**base, "localizer": naive.route.localizer["name"], "route": "agnostic",
                          "labels_used": nrec["labels_used"]}, NAIVE, -1, nv.mask, c, gate=np.nan, flag=""))
        rows.append(_row({**base, "localizer": "gt_box", "route": "gt_box", "labels_used": 0}, ORACLE, -2,
                         oracle_mask(study, c, e), c, gate=np.nan, flag=""))
        rows += peer_rows(peers, c, e, base, _row)
        if keep_masks:
            masks[c.case_id] = tr.final
    df = with_budget(pd.DataFrame(rows), n_labels).assign(notebook=notebook, profile=study.profile.name,
                                                          model=study.model_key)
    return df, {"genome": {**grec, "labels_used": used}, "route": pipe.route, "params": dict(pipe.params),
                "masks": masks, "labels": sorted(set(grec["labels"]) | set(choice["labels"])), "n_labels": n_labels,
                "choice": choice}


def with_budget(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """Rows at label budget N: ``n_labels`` set and the budget in each method name (e.g. 'deployed_n25'), so that the
    rows of every budget live side by side in one results table; ``stage`` keeps the bare stage name."""
    return df.assign(n_labels=int(n), method=[f"{st}_n{int(n)}" for st in df.stage])


def at_largest_budget(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of each domain's largest label budget (the configuration the ablation, gallery and gate sections
    show); results without an ``n_labels`` column are returned as they are."""
    if "n_labels" not in df or df.empty:
        return df
    top = df.groupby("domain").n_labels.transform("max")
    return df[df.n_labels == top]


def ablation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice after each stage (``ev.ACROSS_SEEDS``), its median, the deployed mask's median HD95
    (``ev.hd95_summary``), with fired / accepted rates, in pipeline order, at the largest label budget."""
    d = ev.scored_units(at_largest_budget(df))
    d = d[d.stage_index >= 0]
    order = d.groupby("stage").stage_index.min().sort_values()
    s = ev.seed_summary(d, ["stage"]).set_index("stage")
    out = []
    for stage in order.index:
        g = d[d.stage == stage]
        out.append({"stage": stage, "Dice": ev.fmt_mean_sd(s.loc[stage, "mean"], s.loc[stage, "sd"]),
                    "median Dice": f"{g.dice.median():.3f}",
                    "median HD95": ev.hd95_summary(g.hd95, ev.hd95_unit(g)) if stage == DEPLOYED else "–",
                    "fired": "–" if stage in ("localize", DEPLOYED) else f"{g.fired.mean():.0%}",
                    "accepted": "–" if stage in ("localize", DEPLOYED) else f"{g.accepted.mean():.0%}"})
    return pd.DataFrame(out)


def gap_closed(df: pd.DataFrame) -> pd.DataFrame:
    """Per seed: naive, deployed and oracle Dice (mean over the scored units) and the fraction of the naive ->
    oracle gap the pipeline closes (largest label budget)."""
    m = ev.scored_units(at_largest_budget(df))
    m = m[m.stage.isin([NAIVE, DEPLOYED, ORACLE])].groupby(["domain", "seed", "stage"]).dice.mean().unstack()
    m["gap closed"] = (m[DEPLOYED] - m[NAIVE]) / (m[ORACLE] - m[NAIVE])
    return m.reset_index()[["domain", "seed", NAIVE, DEPLOYED, ORACLE, "gap closed"]]


def save_masks(masks: dict, notebook: str, profile: str, domain: str, seed: int) -> Path:
    """Deployed masks (bit-packed) under results/<profile>/masks/, for the gallery."""
    path = paths.results_dir(profile) / "masks" / f"{notebook}_{domain}_s{seed}.npz"
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **{k: np.packbits(v) for k, v in masks.items()},
                            **{f"__shape__{k}": np.array(v.shape) for k, v in masks.items()})
    return path


def load_masks(notebook: str, profile: str, domain: str, seed: int) -> dict:
    """Masks saved by save_masks (empty dict when the file is absent)."""
    path = paths.results_dir(profile) / "masks" / f"{notebook}_{domain}_s{seed}.npz"
    if not path.is_file():
        return {}
    z = np.load(path)
    return {k: np.unpackbits(z[k])[: int(np.prod(z[f"__shape__{k}"]))].reshape(z[f"__shape__{k}"]).astype(bool)
            for k in z.files if not k.startswith("__shape__")}
