"""Notebook 06's headline, tables and figures (report section 4): the trained network chosen per (domain, N) by
validation Dice vs the training-free pipeline vs the tuned decoder, the N a network needs to match the pipeline, and
the data-efficiency panels.

"The best trained network" of a cell is the arch with the highest validation Dice (``val_dice``: each run's Dice on
the split carved from its N labels, at the weights it kept), mean over seeds per cell and per seed for the per-seed
curves; its TEST Dice is what the tables report. A test score never chooses (``evaluation.select_best``).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import evaluation as ev
from ..baselines.nets import ARCHS
from ..config import DOMAINS
from ..errors import DataError
from ..results import PIPELINE_NOTEBOOKS, load_results
from .peers import PEERS

DECODER_NOTEBOOK = "07_fewshot_decoder"
PENDING = "pending"
NO_VAL = "no validation Dice: cannot choose"
CHOSEN_ON = ("the arch with the highest validation Dice (on the split carved from the N labels, at each run's kept "
             "weights; mean over seeds) is chosen per domain and N, and its test Dice is shown; a run without a "
             "validation Dice (nnU-Net without its fold validation) cannot be chosen")
RUN_KEYS = ["domain", "arch", "init", "n_labels"]


# ---------------------------------------------------------------- per-seed scores and the choice of network


def nn_per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """Mean test Dice over the test units, and the run's validation Dice, per domain x arch x init x N x seed
    (finished runs only)."""
    d = ev.scored_units(df)
    d = d.assign(val_dice=pd.to_numeric(d.val_dice, errors="coerce")) if "val_dice" in d else d.assign(val_dice=np.nan)
    return d.groupby(RUN_KEYS + ["seed"], as_index=False).agg(dice=("dice", "mean"), val_dice=("val_dice", "max"))


def nn_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Per domain x arch x init x N: test Dice's mean and sd across seeds (``ev.seed_summary``), seeds, units per
    seed, and the validation Dice (mean over seeds) the best network is chosen on."""
    out = ev.seed_summary(ev.scored_units(df), RUN_KEYS)
    val = nn_per_seed(df).groupby(RUN_KEYS, as_index=False).val_dice.mean()
    out = out.merge(val, on=RUN_KEYS, how="left")
    rank = {d: DOMAINS.index(d) if d in DOMAINS else len(DOMAINS) + i     # the study's domain order
            for i, d in enumerate(dict.fromkeys(df.domain))}
    return out.sort_values(["domain", "arch", "n_labels"], key=lambda c: c.map(rank) if c.name == "domain" else c,
                           kind="stable").reset_index(drop=True)


def best_nn(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (domain, N): the arch with the highest validation Dice (mean over seeds), with its test mean, sd, seeds
    and init; a cell where no arch has a validation Dice has no row."""
    return ev.select_best(curves, ["domain", "n_labels"], on="val_dice")


def envelope_per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """Per domain x seed x N: the test Dice of the arch with the highest validation Dice in that seed (one seed's
    'best trained NN' curve), and which arch it was."""
    chosen = ev.select_best(nn_per_seed(df), ["domain", "seed", "n_labels"], on="val_dice")
    return chosen[["domain", "seed", "n_labels", "dice", "arch"]]


# ---------------------------------------------------------------- the other columns, read from results files


def pipeline_results(dom: str, profile: str) -> tuple[str | None, pd.DataFrame | None]:
    """(notebook, its results) of a domain's pipeline notebook (02-05); None where it has none or has not run."""
    nb = PIPELINE_NOTEBOOKS.get(dom)
    try:
        return nb, (load_results(nb, profile) if nb else None)
    except DataError:
        return nb, None


def pipeline_per_seed(profile: str, domains) -> tuple[pd.DataFrame, dict[str, str]]:
    """Deployed-stage Dice per domain x N x seed from notebooks 02-05 with the labels the pipeline used, and per
    domain where it came from (or 'pending')."""
    parts, origin = [], {}
    for dom in domains:
        nb, df = pipeline_results(dom, profile)
        rows = (None if df is None or "stage" not in df
                else ev.scored_units(df[(df.domain == dom) & (df.stage == "deployed")]))
        if rows is None or rows.empty or "n_labels" not in rows:
            origin[dom] = PENDING
            continue
        origin[dom] = nb
        parts.append(rows.groupby(["domain", "n_labels", "seed"], as_index=False).agg(
            dice=("dice", "mean"), labels_used=("labels_used", "max"), units=("dice", "size")))
    cols = ["domain", "n_labels", "seed", "dice", "labels_used", "units"]
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)), origin


def peers_per_seed(profile: str, domains) -> pd.DataFrame:
    """Dice of each few-shot SAM peer (``peers.PEERS``) per domain x N x seed from notebooks 02-05's results, with
    the labels it used (empty where none has run; spleen's notebook runs no peer)."""
    parts = []
    for dom in domains:
        df = pipeline_results(dom, profile)[1]
        if df is None or "stage" not in df or "n_labels" not in df:
            continue
        rows = ev.scored_units(df[(df.domain == dom) & df.stage.isin([p.stage for p in PEERS])])
        parts.append(rows.groupby(["domain", "stage", "n_labels", "seed"], as_index=False).agg(
            dice=("dice", "mean"), labels_used=("labels_used", "max")))
    cols = ["domain", "stage", "n_labels", "seed", "dice", "labels_used"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def peer_cells(peers: pd.DataFrame, dom: str, n: int, origin: str) -> dict[str, str]:
    """One headline cell per peer at (domain, N): its Dice (``ev.ACROSS_SEEDS``) and the labels it used; '–' where
    the domain's notebook ran without peer rows at that N, 'pending' where it has not run."""
    out = {}
    for p in PEERS:
        at = peers[(peers.domain == dom) & (peers.stage == p.stage) & (peers.n_labels == n)] if len(peers) else None
        out[p.title] = (PENDING if origin == PENDING else "–" if at is None or at.empty
                        else f"{_cell(at.dice)} ({_labels(int(at.labels_used.max()))})")
    return out


def _labels(k: int) -> str:
    """'1 label', '10 labels'."""
    return f"{k} label{'s' * (k != 1)}"


def decoder_per_seed(profile: str) -> pd.DataFrame:
    """Tuned-decoder Dice per domain x arm x N x seed from notebook 07, with labels used (empty when it has not
    run)."""
    cols = ["domain", "arm", "n_labels", "seed", "dice", "labels_used"]
    try:
        df = load_results(DECODER_NOTEBOOK, profile)
    except DataError:
        return pd.DataFrame(columns=cols)
    d = ev.scored_units(df[df.decoder == "tuned"])
    if "labels_used" not in d:
        d = d.assign(labels_used=d.n_labels)
    return d.groupby(["domain", "arm", "n_labels", "seed"], as_index=False).agg(
        dice=("dice", "mean"), labels_used=("labels_used", "max"))


# ---------------------------------------------------------------- the N a network needs


def match_n(ns, dice, target: float) -> float:
    """Smallest N where the curve reaches ``target``, linear in log N between budgets; -inf below the smallest
    budget (already matched), +inf when never matched within the budgets."""
    ns, dice = np.asarray(ns, float), np.asarray(dice, float)
    order = np.argsort(ns)
    ns, dice = ns[order], dice[order]
    if not len(ns) or not np.isfinite(target):
        return math.nan
    if dice[0] >= target:
        return -math.inf
    for i in range(1, len(ns)):
        if dice[i] >= target:
            t = (target - dice[i - 1]) / (dice[i] - dice[i - 1])
            return float(np.exp(np.log(ns[i - 1]) + t * (np.log(ns[i]) - np.log(ns[i - 1]))))
    return math.inf


def match_n_per_seed(envelope: pd.DataFrame, pipeline: pd.DataFrame) -> pd.DataFrame:
    """Per domain x seed: the N at which that seed's best-NN curve meets the pipeline's own curve (the first budget
    where the network is at least as good, linear in log N between budgets on the difference of the two curves)."""
    rows = []
    for (dom, seed), g in envelope.groupby(["domain", "seed"]):
        p = pipeline[pipeline.domain == dom]
        same = p[p.seed == seed] if (p.seed == seed).any() else p.groupby("n_labels", as_index=False).dice.mean()
        both = g.merge(same[["n_labels", "dice"]], on="n_labels", suffixes=("_nn", "_pipe"))
        n = (crossing_n(both.n_labels, both.dice_nn - both.dice_pipe) if len(both) else math.nan)
        rows.append({"domain": dom, "seed": seed, "match_n": n})
    return pd.DataFrame(rows, columns=["domain", "seed", "match_n"])


def crossing_n(ns, diff) -> float:
    """Smallest N where ``diff`` (network minus pipeline) reaches 0, linear in log N between budgets; -inf when the
    network is already level at the smallest budget, +inf when it never gets there."""
    return match_n(ns, diff, 0.0)


def fmt_match(values, ns) -> str:
    """'38 ± 6', '> 100', '≤ 10' or a mix across seeds, e.g. '45 (1/2 seeds; other > 100)'."""
    v = [x for x in values if not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return PENDING
    lo, hi = min(ns), max(ns)
    finite = [x for x in v if np.isfinite(x)]
    above, below = sum(x == math.inf for x in v), sum(x == -math.inf for x in v)
    if not finite:
        return f"> {hi}" if above == len(v) else f"≤ {lo}" if below == len(v) else f"≤ {lo} or > {hi}"
    m, s, k = ev.mean_sd(finite)
    core = f"{m:.0f}" if k == 1 else f"{m:.0f} ± {s:.0f}"
    if k == len(v):
        return core
    rest = ", ".join(x for x, c in ((f"> {hi}", above), (f"≤ {lo}", below)) if c)
    return f"{core} ({k}/{len(v)} seeds; others {rest})"


# ---------------------------------------------------------------- the headline table


def _cell(values) -> str:
    """'mean ± sd' (ev.ACROSS_SEEDS) of per-seed values, or 'pending' when there are none."""
    m, s, _ = ev.mean_sd(values)
    return ev.fmt_mean_sd(m, s) if np.isfinite(m) else PENDING


def headline(df: pd.DataFrame, pipeline: pd.DataFrame, origin: dict[str, str], decoder: pd.DataFrame,
             titles: dict[str, str] | None = None, peers: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table of strings, boolean frame marking where the pipeline leads the best NN): one row per domain and label
    budget N, every method with the labels it used beside its score, the few-shot SAM peers (``peers_per_seed``)
    among them. All methods are scored on the same test units (spleen: every slice of each test volume, per
    volume)."""
    curves = nn_curves(df)
    best = best_nn(curves)
    used = ev.scored_units(df)
    labels = used.groupby(["domain", "arch", "n_labels"]).labels_used.max() if "labels_used" in used else None
    rows, leads = [], []
    for dom in dict.fromkeys(curves.domain):
        for n in sorted(curves[curves.domain == dom].n_labels.unique()):
            at = best[(best.domain == dom) & (best.n_labels == n)]
            b = at.iloc[0] if len(at) else None
            bm = float(b["mean"]) if b is not None else math.nan
            p = pipeline[(pipeline.domain == dom) & (pipeline.n_labels == n)]
            pm, _, _ = ev.mean_sd(p.dice)
            both = bool(np.isfinite(pm) and np.isfinite(bm))
            row = {"domain": (titles or {}).get(dom, dom), "N": int(n),
                   "best NN": f"{_fmt(b)} ({short(b.arch)}, {b.init})" if b is not None else NO_VAL,
                   "NN labels used": (int(labels.get((dom, b.arch, n), n)) if labels is not None and b is not None
                                      else int(n)),
                   "training-free pipeline": _cell(p.dice),
                   "pipeline labels used": int(p.labels_used.max()) if len(p) else PENDING,
                   "pipeline − best NN": (f"{pm - bm:+.3f}" if both else PENDING if not np.isfinite(pm) else "–")}
            row.update(decoder_cells(decoder, dom, n))
            if peers is not None:
                row.update(peer_cells(peers, dom, n, origin.get(dom, PENDING)))
            row["pipeline results"] = origin.get(dom, PENDING)
            rows.append(row)
            leads.append({"best NN": both and pm > bm, "training-free pipeline": both and pm > bm})
    table = pd.DataFrame(rows)
    return table, pd.DataFrame(leads).reindex(columns=table.columns, fill_value=False)


def _fmt(b) -> str:
    """'mean ± sd' of a best-NN row's test Dice."""
    return ev.fmt_mean_sd(b["mean"], b["sd"])


def match_table(df: pd.DataFrame, pipeline: pd.DataFrame, origin: dict[str, str],
                titles: dict[str, str] | None = None) -> pd.DataFrame:
    """Per domain: the budgets at which the pipeline leads the best NN, and the N at which the best NN's curve meets
    the pipeline's own curve (mean ± sd across seeds, '≤ N' when level from the start, '> N' when never)."""
    curves, env = nn_curves(df), envelope_per_seed(df)
    ns = sorted(curves.n_labels.unique())
    matches = match_n_per_seed(env, pipeline)
    rows = []
    for dom in dict.fromkeys(curves.domain):
        p = pipeline[pipeline.domain == dom].groupby("n_labels").dice.mean()
        e = best_nn(curves[curves.domain == dom]).set_index("n_labels")["mean"]
        lead = [int(n) for n in ns if n in p.index and n in e.index and p[n] > e[n]]
        rows.append({"domain": (titles or {}).get(dom, dom),
                     "pipeline leads the best NN at N": ", ".join(map(str, lead)) if len(p) else PENDING,
                     "N for best NN to match pipeline": (fmt_match(matches[matches.domain == dom].match_n, ns)
                                                         if len(p) else PENDING),
                     "pipeline results": origin.get(dom, PENDING)})
    return pd.DataFrame(rows)


def short(arch: str) -> str:
    """Short arch label for table cells."""
    return ARCHS[arch][0] if arch in ARCHS else arch


def decoder_cells(decoder: pd.DataFrame, dom: str, n: int) -> dict[str, str]:
    """Tuned-decoder cells of one domain at budget N from notebook 07 (GT box, and the domain's GT-free localizer),
    with labels used; '–' where 07 did not tune at that N, 'pending' when it has not run."""
    out = {}
    for arm, label in (("localizer", "tuned decoder + domain localizer"), ("gt_box", "tuned decoder, GT box")):
        d = decoder[(decoder.domain == dom) & (decoder.arm == arm)]
        if d.empty:
            out[label] = PENDING
            continue
        at = d[d.n_labels == n]
        out[label] = _cell(at.dice) + f" ({int(at.labels_used.max())} labels)" if len(at) else "–"
    return out


def runs_table(df: pd.DataFrame, titles: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per training run: labels used, steps run, the step whose weights were kept and its validation Dice,
    what ended the run (the validation plateau or the step budget) and seconds."""
    cols = ["domain", "arch", "n_labels", "seed", "labels_used", "init", "status", "stop", "steps_run", "best_step",
            "val_dice", "train_s"]
    runs = df[[c for c in cols if c in df]].drop_duplicates(["domain", "arch", "n_labels", "seed"])
    return runs.assign(domain=runs.domain.map(lambda d: (titles or {}).get(d, d)),
                       arch=runs.arch.map(short)).reset_index(drop=True)


def mark_leads(table: pd.DataFrame, leads: pd.DataFrame, marker: str = " ★") -> pd.DataFrame:
    """The table with a marker appended where the pipeline leads (the published CSV/HTML cannot carry bold)."""
    out = table.copy()
    for col in table.columns:
        if col in leads:
            out[col] = [f"{v}{marker}" if flag else v for v, flag in zip(table[col], leads[col])]
    return out


def bold_leads(table: pd.DataFrame, leads: pd.DataFrame):
    """A pandas Styler that sets the cells where the pipeline leads in bold (for display in the notebook)."""
    return table.style.apply(lambda col: ["font-weight: bold" if f else "" for f in leads[col.name]], axis=0)


# ---------------------------------------------------------------- figures


def panels(df: pd.DataFrame, pipeline: pd.DataFrame, titles: dict[str, str] | None = None):
    """Per domain: each arch's Dice vs N with a seed band, the training-free pipeline's own curve over the same
    budgets (labels it used written at each point), shaded where it leads the best NN."""
    import matplotlib.pyplot as plt

    curves = nn_curves(df)
    doms = list(dict.fromkeys(curves.domain))
    fig, axes = plt.subplots(1, len(doms), figsize=(3.5 * len(doms), 3.4), squeeze=False, sharey=True)
    for ax, dom in zip(axes[0], doms):
        _panel(ax, curves[curves.domain == dom], pipeline[pipeline.domain == dom])
        ax.set_title((titles or {}).get(dom, dom), fontsize=9)
    axes[0, 0].set_ylabel("test Dice")
    axes[0, 0].set_ylim(0, 1)
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _panel(ax, c: pd.DataFrame, p: pd.DataFrame) -> None:
    """One domain's data-efficiency panel."""
    ns = sorted(c.n_labels.unique())
    for arch, g in c.groupby("arch", sort=False):
        g, i = g.sort_values("n_labels"), _color(arch)
        sd = g["sd"].fillna(0).to_numpy()
        ax.plot(g.n_labels, g["mean"], marker="o", ms=3, color=f"C{i}", label=f"{short(arch)} ({g.init.iloc[0]})")
        ax.fill_between(g.n_labels, g["mean"] - sd, g["mean"] + sd, color=f"C{i}", alpha=0.2, lw=0)
    env = best_nn(c).set_index("n_labels")["mean"].reindex(ns)
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("labelled images N")
    ax.grid(alpha=0.3)
    if p.empty:
        ax.text(0.03, 0.04, "pipeline: pending", transform=ax.transAxes, ha="left", fontsize=8, color="0.4")
        return
    pc = p.groupby("n_labels").agg(mean=("dice", "mean"), sd=("dice", lambda v: ev.mean_sd(v)[1]),
                                   used=("labels_used", "max"))
    pc = pc.reindex([n for n in ns if n in pc.index])
    ax.plot(pc.index, pc["mean"], color="k", ls="--", marker="s", ms=3.5, lw=1.2, label="training-free pipeline")
    if pc["sd"].notna().any():
        ax.fill_between(pc.index, pc["mean"] - pc["sd"].fillna(0), pc["mean"] + pc["sd"].fillna(0), color="k",
                        alpha=0.06, lw=0)
    for n, r in pc.iterrows():
        ax.annotate(f"{int(r.used)}", (n, r["mean"]), xytext=(0, 5), textcoords="offset points", ha="center",
                    fontsize=6.5, color="0.25")
    e = env.reindex(pc.index).to_numpy()
    ax.fill_between(pc.index, e, pc["mean"], where=pc["mean"].to_numpy() > e, interpolate=True, color="C3",
                    alpha=0.18, lw=0, label="pipeline leads")


def _color(arch: str) -> int:
    """Matplotlib colour index of an arch (U-Net C0, SegFormer C1, nnU-Net and others C2)."""
    return list(ARCHS).index(arch) if arch in ARCHS else 2


def curve_plot(curves: pd.DataFrame, runs: pd.DataFrame, titles: dict[str, str] | None = None):
    """Validation Dice vs step of every run: one panel per domain and arch, one line per N (darker = more labels),
    a dot at the step whose weights the run kept (``best_step`` of its rows in ``runs``). A flat tail before the line
    ends is the plateau early stopping waited for."""
    import matplotlib.pyplot as plt

    keys = ["domain", "arch", "n_labels", "seed"]
    kept = runs[keys + ["best_step"]].drop_duplicates(keys) if len(runs) else pd.DataFrame(columns=keys + ["best_step"])
    curves = curves.drop(columns=["best_step"], errors="ignore").merge(kept, on=keys, how="left")
    doms, archs = list(dict.fromkeys(curves.domain)), list(dict.fromkeys(curves.arch))
    ns = sorted(curves.n_labels.unique())
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(len(archs), len(doms), figsize=(3.2 * len(doms), 2.5 * len(archs)), squeeze=False,
                             sharey=True)
    for i, arch in enumerate(archs):
        for j, dom in enumerate(doms):
            ax = axes[i, j]
            for (n, seed), g in curves[(curves.domain == dom) & (curves.arch == arch)].groupby(["n_labels", "seed"]):
                color = cmap(0.85 * (1 - ns.index(n) / max(len(ns) - 1, 1)))
                ax.plot(g.step, g.val_dice, color=color, lw=1, alpha=0.9, label=f"N={n}" if seed == g.seed.min() else None)
                best = g[g.step == g.best_step]
                if len(best):
                    ax.plot(best.step.iloc[0], best.val_dice.iloc[0], "o", color=color, ms=3)
            ax.set_title(f"{(titles or {}).get(dom, dom)}\n{short(arch)}", fontsize=8)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            if i == len(archs) - 1:
                ax.set_xlabel("step")
        axes[i, 0].set_ylabel("validation Dice")
    axes[0, -1].legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    return fig
