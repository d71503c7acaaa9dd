"""What notebooks 02-05 show for one domain: route and genome, the skill-by-skill ablation, the oracle gap
closed, the chain figure and a few examples. Kept here so the four notebooks differ only in their prose."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import viz
from ..results import fmt_mean_sd, save_results
from .experiment import DEPLOYED, NAIVE, ORACLE, ablation_table, gap_closed, run_domain, save_masks, test_cases


def chain_figure(df: pd.DataFrame, title: str):
    """Dice after each stage (bars: mean over cases, dots: per seed), naive and oracle as reference lines."""
    d = df[df.stage_index >= 0]
    order = d.groupby("stage").stage_index.min().sort_values().index.tolist()
    per_seed = d.groupby(["stage", "seed"]).dice.mean().unstack().loc[order]
    fig, ax = plt.subplots(figsize=(1.2 * len(order) + 2, 3.2))
    ax.bar(range(len(order)), per_seed.mean(1), color="#93c5fd", edgecolor="#1d4ed8")
    for j, seed in enumerate(per_seed.columns):
        ax.plot(range(len(order)), per_seed[seed], "o", color="#1d4ed8", ms=3, label="per seed" if j == 0 else None)
    for stage, style in ((NAIVE, ":"), (ORACLE, "--")):
        v = df[df.stage == stage].groupby("seed").dice.mean().mean()
        ax.axhline(v, ls=style, color="#374151", lw=1)
        ax.text(len(order) - 0.5, v, f" {stage} {v:.3f}", va="center", fontsize=8)
    for i, v in enumerate(per_seed.mean(1)):
        ax.text(i, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(order)), [s.replace("_", "\n") for s in order], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Dice")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def route_table(info: dict) -> pd.DataFrame:
    """The route (localizer, skills) and every parameter the run used, genome-fit ones marked."""
    r = info["route"]
    rows = [{"what": "localizer", "value": ", ".join(f"{k}={v}" for k, v in r.localizer.items()), "fit": ""},
            {"what": "skills (in order)", "value": " -> ".join(r.skills) or "none", "fit": ""}]
    fitted = set(info["genome"].get("params", {}))
    for k, v in sorted(info["params"].items()):
        rows.append({"what": k, "value": f"{v:.3g}" if isinstance(v, float) else str(v),
                     "fit": f"genome [{r.genome[k][0]:g}, {r.genome[k][1]:g}]" if k in fitted else "fixed"})
    g = info["genome"]
    if g.get("evals"):
        rows.append({"what": "genome fit", "value": f"Dice {g['start_dice']:.3f} -> {g['fit_dice']:.3f} on "
                     f"{g.get('genome_labels', '?')} labelled train cases (leave one out: "
                     f"{g.get('loo_cases', 0)} of them are supports, each localized without itself), "
                     f"{g['evals']} evaluations", "fit": ""})
    rows.append({"what": "labels used", "value": f"{g.get('labels_used', '?')} of the N={g.get('n_labels', '?')} "
                 "labelled train cases (supports and genome cases, inside the same draw the trained networks "
                 "train on)", "fit": ""})
    return pd.DataFrame(rows)


def gap_table(df: pd.DataFrame) -> pd.DataFrame:
    """Naive, deployed, oracle Dice and the fraction of the gap closed (mean ± sd over seeds)."""
    g = gap_closed(df)
    out = {}
    for col in (NAIVE, DEPLOYED, ORACLE, "gap closed"):
        v = g[col]
        out[col] = fmt_mean_sd(v.mean(), v.std(ddof=0) if len(v) > 1 else np.nan)
    return pd.DataFrame([out])


def budget_table(df: pd.DataFrame) -> pd.DataFrame:
    """Deployed, naive and oracle Dice per label budget N with the labels each used (mean ± sd over seeds)."""
    rows = []
    for n, g in df.groupby("n_labels"):
        row = {"N": int(n)}
        for stage in (DEPLOYED, NAIVE, ORACLE):
            d = g[g.stage == stage]
            per_seed = d.groupby("seed").dice.mean()
            row[f"{stage} Dice"] = fmt_mean_sd(per_seed.mean(), per_seed.std(ddof=0) if len(per_seed) > 1 else np.nan)
            row[f"{stage} labels used"] = int(d.labels_used.max()) if len(d) else 0
        rows.append(row)
    return pd.DataFrame(rows)


def run_budgets(study, domain: str, seed: int, notebook: str, route=None) -> tuple[pd.DataFrame, dict]:
    """The pipeline at every label budget N of one seed. A budget whose supports and genome cases are those of a
    smaller budget (the route's caps were reached) gives the same pipeline, so that run's rows are reused with
    the new N instead of running it again. Returns (rows, info of the largest budget)."""
    from .experiment import budgets, label_sets, settings, with_budget

    train, s = study.data(domain).train, settings(study.profile)
    parts, seen, info = [], {}, None
    for n in budgets(study.profile, study.data(domain)):
        sup, gen = label_sets(train, n, seed, s)
        key = (tuple(c.case_id for c in sup), tuple(c.case_id for c in gen))
        if key in seen:
            df = with_budget(seen[key], n)
            info = {**info, "n_labels": n, "genome": {**info["genome"], "n_labels": n}}
        else:
            df, info = run_domain(study, domain, seed, notebook, route=route, n_labels=n)
            seen[key] = df
        parts.append(df)
    return pd.concat(parts, ignore_index=True), info


def run_section(study, domain: str, notebook: str, art, route=None) -> pd.DataFrame:
    """Run every seed at every label budget, save results and the largest budget's masks, and record the
    section's tables and figures in ``art`` (``route``: the deployed route, None: the domain's own)."""
    from IPython.display import display

    from .experiment import at_largest_budget

    parts, infos = [], {}
    for seed in study.seeds:
        df, info = run_budgets(study, domain, seed, notebook, route=route)
        info["masks_saved"] = save_masks(info["masks"], notebook, study.profile.name, domain, seed)
        parts.append(df)
        infos[seed] = info
    df = pd.concat(parts, ignore_index=True)
    save_results(df, notebook, study.profile.name)
    first = infos[study.seeds[0]]
    n, top = len(test_cases(study, domain)), int(df.n_labels.max())
    display(art.table(budget_table(df), f"{domain}_budgets", caption=(
        f"{study.title(domain)}: Dice on the {n} test cases at each label budget N (mean ± sd across seeds), with "
        "how many of the N labelled train cases each method used. The pipeline's supports and genome cases are "
        "drawn from the same N-label draw the trained networks of section 4 train on; the route caps how many it "
        "uses (its supports and at most the profile's genome cases), so 'labels used' can be below N; the naive "
        "localizer uses the supports only, the GT-box oracle no labels.")))
    display(art.table(route_table(first), f"{domain}_route", caption=(
        f"Route of {study.title(domain)} at N={top}: GT-free localizer, skills in order (each kept only if the gate "
        f"improves), and parameter values of seed {study.seeds[0]}; 'genome' values were fit on labelled train "
        "cases only, leave one out.")))
    display(art.table(ablation_table(df), f"{domain}_ablation", caption=(
        f"Skill-by-skill ablation on {n} test cases at N={top}: Dice after each stage (mean ± sd across seeds), "
        "how often a skill fired and how often its proposal was accepted by the GT-free keep-best gate.")))
    display(art.table(gap_table(df), f"{domain}_gap", caption=(
        f"At N={top}: naive = the domain-agnostic prototype localizer's box decoded once; oracle = the ground-truth "
        "box; gap closed = (deployed - naive) / (oracle - naive).")))
    top_df = at_largest_budget(df)
    art.figure(chain_figure(top_df, study.title(domain)), f"{domain}_chain", caption=(
        f"Dice after each stage of the deployed pipeline at N={top} (bar: mean over seeds; dots: seeds) against the "
        "naive localizer (dotted) and the GT-box oracle (dashed)."))
    plt.show()
    seed0 = study.seeds[0]
    art.figure(examples_figure(study, domain, top_df[top_df.seed == seed0], first["masks"]), f"{domain}_examples",
               caption=(f"First test cases of {study.title(domain)}, seed {seed0}, N={top}: ground truth green, "
                        "deployed mask red (the gallery section shows the best and worst)."))
    plt.show()
    return df


def alternative_routes(study, domain: str, routes, seed: int, n_worst: int = 4):
    """(table, figure): each route fitted at the largest budget the same way (genome leave one out) and run on the
    same test cases; the figure shows the worst cases of the last route (ground truth green, prediction red, its
    box yellow)."""
    from ..evaluation.metrics import dice
    from .experiment import fit_domain

    cases = test_cases(study, domain)
    embs = study.embeddings(cases, desc=f"{domain} test")
    rows, last = [], []
    for route in routes:
        pipe, rec = fit_domain(study, domain, seed, route=route)
        runs = [(c, pipe.run(c.image, e)) for c, e in zip(cases, embs)]
        loc = [dice(tr.stages[0].mask, c.mask) for c, tr in runs]
        dep = [dice(tr.final, c.mask) for c, tr in runs]
        name = route.localizer["name"] + (f" ({route.localizer['backend']})" if route.localizer.get("backend") else "")
        rows.append({"localizer": name, "N": rec["n_labels"], "labels used": rec["labels_used"],
                     "localize Dice": f"{np.mean(loc):.3f}", "deployed Dice": f"{np.mean(dep):.3f}",
                     "test cases below 0.5": f"{sum(d < 0.5 for d in dep)} / {len(dep)}"})
        last = sorted(zip(dep, runs), key=lambda t: t[0])[:n_worst]
    fig, axes = plt.subplots(1, max(len(last), 1), figsize=(2.6 * max(len(last), 1), 2.8), squeeze=False)
    for ax, (d, (c, tr)) in zip(axes[0], last):
        viz.overlay(ax, c.image, c.mask, tr.final, title=f"{c.case_id}\nDice {d:.2f}")
        b = [tr.localization.get(k, np.nan) for k in ("box_x0", "box_y0", "box_x1", "box_y1")]
        if np.all(np.isfinite(b)):
            ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="yellow", lw=1))
    fig.tight_layout()
    return pd.DataFrame(rows), fig


def examples_figure(study, domain: str, df: pd.DataFrame, masks: dict, n: int = 4):
    """The first ``n`` test cases with ground truth (green) and the deployed mask (red), Dice in the title."""
    cases = {c.case_id: c for c in test_cases(study, domain)}
    d = df[(df.stage == DEPLOYED)].drop_duplicates("case_id").head(n)
    fig, axes = plt.subplots(1, len(d), figsize=(2.4 * len(d), 2.6), squeeze=False)
    for ax, (_, r) in zip(axes[0], d.iterrows()):
        c = cases[r.case_id]
        viz.overlay(ax, c.image, c.mask, masks.get(r.case_id), title=f"{r.case_id}\nDice {r.dice:.3f}")
    fig.tight_layout()
    return fig
