"""What notebooks 02-05 show for one domain: route and genome, the skill-by-skill ablation, the oracle gap
closed, the chain figure and a few examples. Kept here so the four notebooks differ only in their prose."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import evaluation as ev
from .. import viz
from ..errors import ConfigError
from ..pipeline.router import candidate_routes, with_localizer
from ..results import save_results
from .route_choice import SINGLE
from .domain import (DEPLOYED, NAIVE, ORACLE, ablation_table, at_largest_budget, gap_closed, run_domain, save_masks,
                     test_cases)
from .peers import PEERS
from .peers import caption as peers_caption


def chain_figure(df: pd.DataFrame, title: str):
    """Dice after each stage (bars: mean over seeds of the per-seed mean over units, dots: per seed), naive and
    oracle as reference lines."""
    df = ev.scored_units(df)
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
    """Naive, deployed, oracle Dice and the fraction of the gap closed (``ev.ACROSS_SEEDS``)."""
    g = gap_closed(df)
    cols = (NAIVE, DEPLOYED, ORACLE, "gap closed")
    return pd.DataFrame([{col: ev.fmt_mean_sd(*ev.mean_sd(g[col])[:2]) for col in cols}])


def comparison_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per method at the largest label budget: Dice (``ev.ACROSS_SEEDS``), its bootstrap interval over test units
    (``ev.unit_interval``, the rows of one unit resampled together), the labels it used and its share of units
    below Dice 0.5: the deployed route, each peer, the naive localizer and the GT-box oracle."""
    d = ev.scored_units(at_largest_budget(df))
    titles = {DEPLOYED: "deployed route", **{p.stage: p.title for p in PEERS},
              NAIVE: "naive (prototype box)", ORACLE: "GT-box oracle"}
    rows = []
    for stage, title in titles.items():
        g = d[d.stage == stage]
        if g.empty:
            continue
        route = ", ".join(sorted(set(g.route))) if "route" in g else ""
        rows.append({"method": title, "route": route, "labels used": int(g.labels_used.max()),
                     "Dice": ev.seed_cell(g), "mean [95% interval]": ev.fmt_interval(ev.unit_interval(g)),
                     "units below 0.5": f"{int((g.dice < 0.5).sum())} / {len(g)}"})
    return pd.DataFrame(rows)


def budget_table(df: pd.DataFrame) -> pd.DataFrame:
    """Deployed, naive and oracle Dice per label budget N (``ev.seed_cell``: ``ev.ACROSS_SEEDS``), the labels each
    used, and the deployed route (chosen on the labels)."""
    rows = []
    for n, g in ev.scored_units(df).groupby("n_labels"):
        row = {"N": int(n)}
        for stage in (DEPLOYED, NAIVE, ORACLE):
            d = g[g.stage == stage]
            row[f"{stage} Dice"] = ev.seed_cell(d)
            row[f"{stage} labels used"] = int(d.labels_used.max()) if len(d) else 0
        if "route" in g:
            row["deployed route"] = ", ".join(sorted(set(g[g.stage == DEPLOYED].route)))
        rows.append(row)
    return pd.DataFrame(rows)


def choice_table(choices: list[dict]) -> pd.DataFrame:
    """Per seed and set of labels (budgets N that share their labels share one choice): how the deployed route was
    chosen, on how many labels, the router's cross-validated Dice of each candidate on them
    (``router.scores_table``) and the route chosen."""
    from ..pipeline.router import scores_table

    groups: dict = {}
    for c in choices:
        groups.setdefault((c["seed"], tuple(c["labels"]), c["how"], c["name"]), []).append(c)
    parts = []
    for (seed, labels, how, name), cs in groups.items():
        head = {"seed": seed, "N": ", ".join(str(c["n_labels"]) for c in cs), "labels": len(labels) or "–",
                "how": how}
        scores = cs[0]["scores"]
        parts.append(pd.DataFrame([{**head, "route": name, "chosen": "✓"}]) if scores.empty
                     else scores_table(scores).assign(**head))
    cols = ["seed", "N", "labels", "how", "route", "stage", "held-out Dice", "per fold", "chosen"]
    t = pd.concat(parts, ignore_index=True)
    return t[[c for c in cols if c in t]].fillna("")


def drawer_candidates(domain: str, drawer_backend: str | None = None,
                      deploy_drawer: bool = False, profile=None) -> tuple[list, object]:
    """(candidate routes of ``domain``, the route a caller fixed or None): the routes.yaml candidates, the polygon
    drawer's backend set to ``drawer_backend`` (None: the profile's ``extra['drawer_backend']``, if any; checked now,
    so a missing LLM endpoint fails before any work); with ``deploy_drawer`` the drawer is deployed without a choice."""
    drawer_backend = drawer_backend or (getattr(profile, "extra", None) or {}).get("drawer_backend")
    candidates = [with_localizer(r, backend=drawer_backend) if r.localizer["name"] == "drawer" else r
                  for r in candidate_routes(domain)]
    drawers = [r for r in candidates if r.localizer["name"] == "drawer"]
    if deploy_drawer and not drawers:
        raise ConfigError(f"deploy_drawer=True, but {domain!r} has no drawer route among its candidates "
                          f"{[r.domain for r in candidates]} (routes.yaml)")
    return candidates, (drawers[0] if deploy_drawer else None)


def run_budgets(study, domain: str, seed: int, notebook: str, route=None, candidates=None) -> tuple[pd.DataFrame, dict]:
    """The pipeline at every label budget N of one seed, its route chosen on each budget's labels (``route``
    fixes it). A budget whose supports and genome cases are those of a smaller budget (the route's caps were
    reached) gives the same labels, choice and pipeline, so that run's rows are reused with the new N instead of
    running it again. Returns (rows, info of the largest budget with ``choices``, one per budget)."""
    from .domain import budgets, label_sets, settings, with_budget

    train, s = study.data(domain).train, settings(study.profile)
    parts, seen, info, choices = [], {}, None, []
    for n in budgets(study.profile, study.data(domain)):
        sup, gen = label_sets(train, n, seed, s)
        key = (tuple(c.case_id for c in sup), tuple(c.case_id for c in gen))
        if key in seen:
            df = with_budget(seen[key], n)
            info = {**info, "n_labels": n, "genome": {**info["genome"], "n_labels": n},
                    "choice": {**info["choice"], "n_labels": n}}
        else:
            df, info = run_domain(study, domain, seed, notebook, route=route, n_labels=n, candidates=candidates)
            seen[key] = df
        parts.append(df)
        choices.append(info["choice"])
    return pd.concat(parts, ignore_index=True), {**info, "choices": choices}


def run_section(study, domain: str, notebook: str, art, route=None, candidates=None) -> pd.DataFrame:
    """Run every seed at every label budget, save results and the largest budget's masks, and record the
    section's tables and figures in ``art``. The deployed route is chosen among ``candidates`` (None: the
    domain's routes.yaml candidates) by cross-validation on each budget's labels; ``route`` fixes it instead."""
    from IPython.display import display

    parts, infos = [], {}
    for seed in study.seeds:
        df, info = run_budgets(study, domain, seed, notebook, route=route, candidates=candidates)
        info["masks_saved"] = save_masks(info["masks"], notebook, study.profile.name, domain, seed)
        parts.append(df)
        infos[seed] = info
    df = pd.concat(parts, ignore_index=True)
    save_results(df, notebook, study.profile.name)
    first = infos[study.seeds[0]]
    choices = [c for i in infos.values() for c in i["choices"]]
    n, top = len(test_cases(study, domain)), int(df.n_labels.max())
    neg = int(df[(df.stage == DEPLOYED) & (df.seed == study.seeds[0]) & (df.n_labels == top)].negative.sum())
    units = f"{n} test units" + (f" ({neg} without a target; {ev.EMPTY_RULE})" if neg else "")
    if any(c["how"] != SINGLE for c in choices):
        rs = next((c["settings"] for c in choices if c["settings"]), {})
        how = (f" ({rs['folds']} folds, {rs['finalists']} finalist(s) refitted with a genome budget of "
               f"{rs['genome_budget']}, from the profile)" if rs else "")
        display(art.table(choice_table(choices), f"{domain}_route_choice", caption=(
            f"{study.title(domain)}: how the deployed route was chosen at each label budget N and seed. Each "
            "candidate is scored by the router's k-fold cross-validation on exactly the labels the pipeline uses at "
            f"that N{how}: its supports and genome cases, every label held out once, finalists refitted with their "
            "genome as deployed; the best finalist is deployed. No test image is seen by the choice; a route 'given "
            "by the caller' was not chosen at all.")))
    else:
        c = choices[0]
        print(art.note(f"{study.title(domain)}: route {c['name']!r} deployed at every N ({c['how']})."))
    display(art.table(budget_table(df), f"{domain}_budgets", caption=(
        f"{study.title(domain)}: Dice on the {units} at each label budget N ({ev.ACROSS_SEEDS}), with "
        "how many of the N labelled train cases each method used and the route deployed. The pipeline's supports "
        "and genome cases are drawn from the same N-label draw the trained networks of section 4 train on; the "
        "route caps how many it uses (its supports and at most the profile's genome cases), so 'labels used' can be "
        "below N; the naive localizer uses the supports only, the GT-box oracle no labels (an empty mask where a "
        "unit has no target).")))
    display(art.table(route_table(first), f"{domain}_route", caption=(
        f"Route of {study.title(domain)} at N={top}: GT-free localizer, skills in order (each kept only if the gate "
        f"improves), and parameter values of seed {study.seeds[0]}; 'genome' values were fit on labelled train "
        "cases only, leave one out.")))
    display(art.table(ablation_table(df), f"{domain}_ablation", caption=(
        f"Skill-by-skill ablation on {units} at N={top}: Dice after each stage ({ev.ACROSS_SEEDS}), "
        "its median over units, the deployed mask's median HD95 (with the units that had no boundary), how often a "
        "skill fired and how often its proposal was accepted by the GT-free keep-best gate.")))
    display(art.table(gap_table(df), f"{domain}_gap", caption=(
        f"At N={top} ({ev.ACROSS_SEEDS}): naive = the domain-agnostic prototype localizer's box decoded once; "
        "oracle = the ground-truth box; gap closed = (deployed - naive) / (oracle - naive), per seed.")))
    display(art.table(comparison_table(df), f"{domain}_peers", caption=(
        f"{study.title(domain)} at N={top}: the deployed route beside the few-shot SAM peers, the naive localizer "
        f"and the GT-box oracle on the same {units}, each peer fitted on the route's supports of the same seeded "
        f"draw. Dice: {ev.ACROSS_SEEDS}; the interval: {ev.interval_note()}; 'labels used': of the N labelled train "
        f"images. {peers_caption(study.model_key, study.model_label)}")))
    top_df = at_largest_budget(df)
    art.figure(chain_figure(top_df, study.title(domain)), f"{domain}_chain", caption=(
        f"Dice after each stage of the deployed pipeline at N={top} (bar: mean over seeds of the per-seed mean over "
        "units; dots: seeds) against the naive localizer (dotted) and the GT-box oracle (dashed)."))
    plt.show()
    seed0 = study.seeds[0]
    art.figure(examples_figure(study, domain, top_df[top_df.seed == seed0], first["masks"]), f"{domain}_examples",
               caption=(f"First test cases of {study.title(domain)}, seed {seed0}, N={top}: ground truth green, "
                        "deployed mask red (the gallery section shows the best and worst)."))
    plt.show()
    return df


def deployed_name(df: pd.DataFrame, seed: int) -> str:
    """The route deployed at the largest budget for one seed (chosen on the labels), from a section's rows."""
    d = at_largest_budget(df)
    return str(d[(d.seed == seed) & (d.stage == DEPLOYED)].route.iloc[0])


def alternative_routes(study, domain: str, routes, seed: int, deployed: str | None = None, n_worst: int = 4):
    """(table, figure): each route fitted at the largest budget the same way (genome leave one out) and run on the
    same test units, scored by ``ev.score_case``: a side-by-side comparison only (the deployed route, named by
    ``deployed``, was chosen on the labels, not on these numbers). The figure shows the worst cases of the last
    route (ground truth green, prediction red, its box yellow)."""
    from .domain import fit_domain

    cases = test_cases(study, domain)
    embs = study.embeddings(cases, desc=f"{domain} test")
    rows, last = [], []
    for route in routes:
        pipe, rec = fit_domain(study, domain, seed, route=route)
        runs = [(c, pipe.run(c.image, e)) for c, e in zip(cases, embs)]
        loc = [ev.score_case(tr.stages[0].mask, c, with_hd95=False)["dice"] for c, tr in runs]
        dep = [ev.score_case(tr.final, c, with_hd95=False)["dice"] for c, tr in runs]
        name = route.localizer["name"] + (f" ({route.localizer['backend']})" if route.localizer.get("backend") else "")
        rows.append({"route": route.domain, "localizer": name, "deployed": "✓" if route.domain == deployed else "",
                     "N": rec["n_labels"], "labels used": rec["labels_used"], "localize Dice": f"{np.mean(loc):.3f}",
                     "deployed Dice": f"{np.mean(dep):.3f}",
                     "test units below 0.5": f"{sum(d < 0.5 for d in dep)} / {len(dep)}"})
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
