"""The experiments behind notebook 09: one fixed pipeline on every domain against GT-free routing from the few
labels, and few-shot ranking of automatic-mask-generator candidates in single vs ensembled feature spaces."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..boxes import box_iou, mask_to_box
from ..data.splits import subsample_train
from ..localizers import make_localizer
from ..localizers.amg import zscore
from ..localizers.features import dinov2_weights
from ..metrics import dice
from .core import Pipeline
from .experiment import settings
from .router import holdout_dice, load_routes

FIXED = "agnostic"


def router_settings(profile) -> dict:
    """Sizes of notebook 09 from the profile's pipeline dict: test cases per domain and candidate routes."""
    s = settings(profile)
    return {"n_test": s.get("router_n_test", 12), "candidates": s.get("router_candidates") or list(load_routes())}


def _support(study, domain: str, seed: int):
    data = study.data(domain)
    sup = subsample_train(data.train, min(settings(study.profile)["n_support"], len(data.train)), seed)
    return sup, study.embeddings(sup, desc=f"{domain} support")


def _test(study, domain: str, n: int):
    cases = [c for c in study.data(domain).test if c.mask.any()][:n]
    return cases, study.embeddings(cases, desc=f"{domain} test")


def route_domain(study, domain: str, seed: int) -> pd.DataFrame:
    """Per candidate route: held-out Dice on the few labels (what the router sees) and test Dice (what it gets).

    Routes run without their genome here, so the comparison is between topologies only; the genome-fit
    deployed pipelines are in notebooks 02-05."""
    rs = router_settings(study.profile)
    routes = load_routes()
    sup, sup_e = _support(study, domain, seed)
    cases, embs = _test(study, domain, rs["n_test"])
    rows = []
    for name in tqdm(rs["candidates"], desc=f"{domain} routes (seed {seed})", leave=False):
        route = routes[name]
        label_score = holdout_dice(route, study.model, sup, sup_e, seed=seed)
        pipe = Pipeline(route, study.model).fit(sup, sup_e)
        for c, e in zip(cases, embs):
            tr = pipe.run(c.image, e)
            rows.append({"domain": domain, "seed": seed, "route": name, "method": f"route:{name}", "unit": "case",
                         "case_id": c.case_id,
                         "label_dice": label_score, "dice": dice(tr.final, c.mask), "flag": tr.flag,
                         "n_labels": len(sup)})
    df = pd.DataFrame(rows)
    best = df.groupby("route").label_dice.first().idxmax()
    return df.assign(chosen=df.route == best, own=df.route == domain, fixed=df.route == FIXED)


def routing_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per domain: the fixed pipeline, the routed one (chosen on labels), the domain's own route and the best
    route on test (hindsight), each as test Dice averaged over seeds; 'regret' = best on test - routed."""
    out = []
    for domain, d in df.groupby("domain", sort=False):
        per = d.groupby(["seed", "route"]).dice.mean().unstack()
        chosen = d[d.chosen].groupby("seed").route.first()
        routed = np.mean([per.loc[s, r] for s, r in chosen.items()])
        row = {"domain": domain, f"fixed ({FIXED})": per[FIXED].mean() if FIXED in per else np.nan,
               "routed": routed, "route chosen": ", ".join(sorted(set(chosen))),
               "own route": per[domain].mean() if domain in per else np.nan,
               "best on test (hindsight)": per.mean().max(), "best route on test": per.mean().idxmax()}
        row["regret"] = row["best on test (hindsight)"] - routed
        out.append(row)
    return pd.DataFrame(out)


# ---------------------------------------------------------------- feature-ensemble ranking of AMG candidates

def feature_spaces() -> list[str]:
    """Spaces available here: the model's own embedding, the colour-texture space, DINOv2 when present."""
    return ["sam", "colour"] + (["dinov2"] if dinov2_weights() is not None else [])


def space_combinations(spaces: list[str]) -> list[tuple[str, ...]]:
    """Every single space and every ensemble of two or more."""
    return [c for k in range(1, len(spaces) + 1) for c in itertools.combinations(spaces, k)]


def rank_domain(study, domain: str, seed: int) -> pd.DataFrame:
    """Per test case and feature-space combination: the Dice and box IoU of the top-ranked AMG candidate, with
    the candidate set's best Dice (a perfect ranker) and a random pick's expected Dice as references."""
    rs = router_settings(study.profile)
    spaces = feature_spaces()
    sup, sup_e = _support(study, domain, seed)
    cases, embs = _test(study, domain, rs["n_test"])
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
        d = np.array([dice(m, c.mask) for m in masks])
        gt_box = mask_to_box(c.mask)
        for combo in space_combinations(spaces):
            idx = [spaces.index(s) for s in combo]
            rank = np.mean([zscore(sims[i]) for i in idx], 0) if len(idx) > 1 else sims[idx[0]]
            k = int(np.argmax(rank))
            rows.append({**base, "spaces": "+".join(combo), "method": "rank:" + "+".join(combo), "dice": float(d[k]),
                         "box_iou": box_iou(mask_to_box(masks[k]), gt_box), "flag": "",
                         "best_candidate_dice": float(d.max()), "random_pick_dice": float(d.mean())})
    return pd.DataFrame(rows)


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
