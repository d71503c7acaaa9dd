"""The experiments behind notebook 09: one fixed pipeline on every domain against GT-free routing from the few
labels, and few-shot ranking of automatic-mask-generator candidates in single vs ensembled feature spaces."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import evaluation as ev
from ..boxes import box_iou, mask_to_box
from ..data.splits import subsample_train
from ..localizers import make_localizer
from ..localizers.amg import zscore
from ..localizers.features import dinov2_weights
from ..pipeline.router import ROUTING, fit_route, load_routes, route_scores
from .budgets import settings

FIXED = "agnostic"


def router_settings(profile) -> dict:
    """Sizes of notebook 09 from the profile's pipeline dict: test units per domain (2D cases; spleen volumes, every
    slice), candidate routes, labels the router sees, and its cross-validation (folds, genome budget, finalists)."""
    s = settings(profile)
    return {"n_test": s.get("router_n_test", 12), "n_volumes": s.get("router_n_volumes", 1),
            "candidates": s.get("router_candidates") or list(load_routes()), "n_labels": s.get("router_n_labels", 10),
            "folds": s.get("router_folds", ROUTING["folds"]),
            "genome_budget": s.get("router_genome_budget", ROUTING["genome_budget"]),
            "finalists": s.get("router_finalists", ROUTING["finalists"])}


def _support(study, domain: str, seed: int):
    data = study.data(domain)
    sup = subsample_train(data.train, min(settings(study.profile)["n_support"], len(data.train)), seed)
    return sup, study.embeddings(sup, desc=f"{domain} support")


def _test(study, domain: str, n: int, n_volumes: int = 1):
    """Test units of the router (``evaluation.test_units``): the first ``n`` 2D test cases, negatives included, or
    every slice of the first ``n_volumes`` test volumes (scored per volume, like every other method)."""
    data = study.data(domain)
    cases = ev.test_units(data, n_volumes if data.volumes else n)
    return cases, study.embeddings(cases, desc=f"{domain} test")


def _unit_rows(study, domain: str, cases, masks) -> list[dict]:
    """Per-unit test rows of one route through the evaluation core: a row per 2D case (native resolution), or per
    volume over all of its slices."""
    rows = ev.unit_rows(cases, masks, study.data(domain).volumes, with_hd95=False)
    return [{k: v for k, v in r.items() if k != "index"} for r in rows]


def route_domain(study, domain: str, seed: int) -> pd.DataFrame:
    """Per candidate route: its cross-validated Dice on the N labels (what the router sees, with its spread across
    folds; finalists refitted with their genome as deployed) and its test Dice when deployed from those labels
    (what it gets). The router's choice is the best finalist."""
    rs = router_settings(study.profile)
    routes = load_routes()
    data = study.data(domain)
    labelled = subsample_train(data.train, min(rs["n_labels"], len(data.train)), seed)
    embs = study.embeddings(labelled, desc=f"{domain} labels")
    scores = route_scores(study.model, labelled, embs, rs["candidates"], seed, rs["folds"], rs["genome_budget"],
                          rs["finalists"])
    cases, test_embs = _test(study, domain, rs["n_test"], rs["n_volumes"])
    rows = []
    for name in tqdm(rs["candidates"], desc=f"{domain} routes (seed {seed})", leave=False):
        sc = scores[scores.route == name]
        best_stage = sc[sc.stage == "final"] if (sc.stage == "final").any() else sc
        row = best_stage.iloc[0]
        pipe = fit_route(routes[name], study.model, labelled, embs,
                         rs["genome_budget"] if row.stage == "final" else 0, seed)
        masks = [pipe.run(c.image, e).final for c, e in zip(cases, test_embs)]
        for r in _unit_rows(study, domain, cases, masks):
            rows.append({"domain": domain, "seed": seed, "route": name, "method": f"route:{name}", "flag": "",
                         "label_dice": row["mean"], "label_sd": row["sd"], "stage": row.stage,
                         "genome": row.stage == "final" and bool(routes[name].genome),
                         "chosen": bool(row.chosen), "n_labels": len(labelled), "labels_used": len(labelled), **r})
    df = pd.DataFrame(rows)
    return df.assign(own=df.route == domain, fixed=df.route == FIXED)


def route_scores_table(df: pd.DataFrame, titles: dict | None = None) -> pd.DataFrame:
    """Per domain and route: the router's cross-validated Dice on the labels ± its sd across folds, whether the
    genome was fitted, its test Dice (``evaluation.ACROSS_SEEDS``), and the choice (made on the labels)."""
    out = []
    for (dom, route), g in ev.scored_units(df).groupby(["domain", "route"], sort=False):
        out.append({"domain": (titles or {}).get(dom, dom), "route": route,
                    "labels (CV)": f"{g.label_dice.mean():.3f} ± {g.label_sd.mean():.3f}",
                    "genome": "yes" if g.genome.any() else "no", "test Dice": ev.seed_cell(g),
                    "chosen": "✓" if g.chosen.any() else ""})
    return pd.DataFrame(out)


HINDSIGHT = "best route on test (hindsight; chooses nothing)"


def unit_counts(df: pd.DataFrame) -> dict[str, str]:
    """Per domain: '12 units, 2 negatives' over the test units one route scored for one seed."""
    out = {}
    for dom, d in ev.scored_units(df).groupby("domain", sort=False):
        one = d[(d.route == d.route.iloc[0]) & (d.seed == d.seed.iloc[0])]
        n, k = len(one), int(one["negative"].astype(bool).sum()) if "negative" in one else 0
        out[dom] = f"{n} unit{'s' * (n != 1)}, {k} negative{'s' * (k != 1)}"
    return out


def routing_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per domain: test Dice (``evaluation.ACROSS_SEEDS``; spleen per volume) of the fixed pipeline, of the route
    the router chose on the labels, of the domain's own route, and of the route best on test in hindsight: a
    regret reference read after the choice, never used to choose; 'regret' = hindsight mean - routed mean."""
    out = []
    for domain, d in ev.scored_units(df).groupby("domain", sort=False):
        per = d.groupby(["seed", "route"]).dice.mean().unstack()
        chosen = d[d.chosen].groupby("seed").route.first()
        routed = ev.mean_sd([per.loc[s, r] for s, r in chosen.items()])
        cell = lambda col: ev.fmt_mean_sd(*ev.mean_sd(per[col])[:2]) if col in per else "–"  # noqa: E731
        hindsight = per.mean().idxmax()
        out.append({"domain": domain, f"fixed ({FIXED})": cell(FIXED), "routed": ev.fmt_mean_sd(*routed[:2]),
                    "route chosen (on the labels)": ", ".join(sorted(set(chosen))), "own route": cell(domain),
                    HINDSIGHT: f"{cell(hindsight)} ({hindsight})",
                    "regret": f"{ev.mean_sd(per[hindsight])[0] - routed[0]:.3f}"})
    return pd.DataFrame(out)


# ---------------------------------------------------------------- feature-ensemble ranking of AMG candidates

def feature_spaces() -> list[str]:
    """Spaces available here: the model's own embedding, the colour-texture space, DINOv2 when present."""
    return ["sam", "colour"] + (["dinov2"] if dinov2_weights() is not None else [])


def space_combinations(spaces: list[str]) -> list[tuple[str, ...]]:
    """Every single space and every ensemble of two or more."""
    return [c for k in range(1, len(spaces) + 1) for c in itertools.combinations(spaces, k)]


def rank_domain(study, domain: str, seed: int) -> pd.DataFrame:
    """Per test image with a target (a ranking is scored against one; negatives are left out) and feature-space
    combination: the Dice (native resolution) and box IoU of the top-ranked AMG candidate, with the candidate
    set's best Dice (a perfect ranker) and a random pick's expected Dice as references."""
    rs = router_settings(study.profile)
    spaces = feature_spaces()
    sup, sup_e = _support(study, domain, seed)
    data = study.data(domain)
    units = ev.test_units(data, rs["n_volumes"] if data.volumes else None)
    cases = [c for c in units if c.mask.any()][: rs["n_test"]]     # scored against a target: negatives left out
    embs = study.embeddings(cases, desc=f"{domain} test")
    loc = make_localizer("amg", model=study.model, features=spaces).fit(sup, sup_e)
    rows = []
    for c, e in tqdm(list(zip(cases, embs)), desc=f"{domain} AMG ranking (seed {seed})", leave=False):
        masks, _ = loc.candidates(c.image, e)
        base = {"domain": domain, "seed": seed, "case_id": c.case_id, "unit": "case", "n_candidates": len(masks)}
        if len(masks) == 0:
            rows += [{**base, "spaces": "+".join(k), "method": "rank:" + "+".join(k), "dice": 0.0, "box_iou": 0.0,
                      "flag": "no_candidate"}
                     for k in space_combinations(spaces)]
            continue
        sims = loc.similarities(c.image, e, masks)
        d = np.array([ev.score_case(m, c, with_hd95=False)["dice"] for m in masks])
        gt_box = mask_to_box(c.mask)
        for combo in space_combinations(spaces):
            idx = [spaces.index(s) for s in combo]
            rank = np.mean([zscore(sims[i]) for i in idx], 0) if len(idx) > 1 else sims[idx[0]]
            k = int(np.argmax(rank))
            rows.append({**base, "spaces": "+".join(combo), "method": "rank:" + "+".join(combo), "dice": float(d[k]),
                         "box_iou": box_iou(mask_to_box(masks[k]), gt_box), "flag": "",
                         "best_candidate_dice": float(d.max()), "random_pick_dice": float(d.mean())})
    return pd.DataFrame(rows)


def ranking_images(df: pd.DataFrame) -> dict[str, int]:
    """Test images with a target that the ranking scored, per domain."""
    return df.groupby("domain", sort=False).case_id.nunique().to_dict()


def ranking_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice of the top-ranked candidate per domain x feature-space combination, with the references."""
    t = df.groupby(["domain", "spaces"], sort=False).dice.mean().unstack()
    ref = df.groupby("domain", sort=False)[["random_pick_dice", "best_candidate_dice"]].mean()
    return t.join(ref.rename(columns={"random_pick_dice": "random pick", "best_candidate_dice": "perfect ranker"}))


def tidy(study, routes: pd.DataFrame, ranks: pd.DataFrame, notebook: str = "09_router") -> pd.DataFrame:
    """Both experiments as one tidy results table with provenance columns."""
    parts = [routes.assign(part="routing"), ranks.assign(part="ranking")]
    df = pd.concat(parts, ignore_index=True)
    return df.assign(notebook=notebook, profile=study.profile.name, model=study.model_key,
                     source=[study.source_of(d) for d in df.domain])


# ---------------------------------------------------------------- figures

def label_vs_test(df: pd.DataFrame, title=lambda domain: domain):
    """Per domain: each route's held-out Dice on the labels (x) against its test Dice (y), the choice ringed."""
    import matplotlib.pyplot as plt

    per = df.groupby(["domain", "route"]).agg(label=("label_dice", "mean"), test=("dice", "mean")).reset_index()
    doms = list(dict.fromkeys(df.domain))
    fig, axes = plt.subplots(1, len(doms), figsize=(3.1 * len(doms), 3), squeeze=False)
    for ax, dom in zip(axes[0], doms):
        d = per[per.domain == dom]
        ax.scatter(d.label, d.test, color="#2563eb")
        for _, r in d.iterrows():
            ax.annotate(r.route, (r.label, r.test), fontsize=7, xytext=(3, 2), textcoords="offset points")
        chosen = df[(df.domain == dom) & df.chosen].route.unique()
        d2 = d[d.route.isin(chosen)]
        ax.scatter(d2.label, d2.test, s=90, facecolors="none", edgecolors="#dc2626", label="chosen")
        ax.plot([0, 1], [0, 1], ":", color="#9ca3af", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="held-out Dice on the labels", title=title(dom))
    axes[0, 0].set_ylabel("test Dice")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def ranking_figure(df: pd.DataFrame):
    """Top-ranked candidate's Dice per domain and feature-space combination, with the references."""
    import matplotlib.pyplot as plt

    t = ranking_table(df)
    fig, ax = plt.subplots(figsize=(7, 3))
    t.plot.bar(ax=ax, width=0.8, rot=0, colormap="tab10")
    ax.set(ylabel="Dice of the top candidate", ylim=(0, 1), xlabel="")
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    fig.tight_layout()
    return fig
