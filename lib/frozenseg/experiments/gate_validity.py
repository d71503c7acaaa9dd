"""Gate validity (notebook 10): does a domain's GT-free gate rank candidate masks the way the true Dice does?

Each test case gets a set of candidate masks built without its ground truth: the localize mask, every proposal a
skill made under keep-best (``Stage.proposals``) and decodes of the localizer's box scaled and shifted. Each
candidate carries the gate value the pipeline gives it; the ground truth only scores it (Dice). From these rows:
within-case and pooled Spearman correlations of gate vs Dice with case-bootstrap intervals (the evaluation core's
``cluster_bootstrap``: no interval below ``evaluation.MIN_UNITS`` units), and an audit of the keep-best loop
(localize vs gate-kept vs best-in-hindsight Dice, harmful accepts). A 2D test image's masks are scored through
``evaluation.score_case`` (its native resolution; a negative by the empty rule), a spleen slice against its slice.

Rows are tidy, one ``unit`` per kind: ``candidate`` (one candidate mask), ``step`` (one skill step of one case)
and ``case`` (localize, deployed and best-in-hindsight Dice of one case: the best in hindsight is the loop's mask of
highest true Dice, picked with the ground truth, a reference that decides nothing).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from .. import evaluation as ev
from ..boxes import clip_box, loosen_box
from ..errors import ConfigError
from ..pipeline.frame import Candidate
from ..pipeline.volume import LOCALIZE as VLOC
from .domain import at_largest_budget, fit_domain, test_cases
from .spleen import fit_volume_pipeline

SCALES = (0.7, 0.85, 1.15, 1.3)          # localizer box scaled about its centre
SHIFT = 0.15                             # localizer box moved by this fraction of its side, in four directions
PERTURBATIONS = tuple(f"scale_{s:g}" for s in SCALES) + ("shift_left", "shift_right", "shift_up", "shift_down")
# cpu keeps the whole report near its time budget (the decoder is most of the cost): 15 test cases per 2D domain,
# four perturbed boxes there and two per spleen slice; smoke and full use every perturbation
SIZES = {"smoke": {"n_boot": 200, "n_test": None, "perturb": PERTURBATIONS, "spleen_perturb": PERTURBATIONS},
         "cpu": {"n_boot": 1000, "n_test": 15, "perturb": ("scale_0.85", "scale_1.3", "shift_left", "shift_down"),
                 "spleen_perturb": ("scale_1.3", "shift_left")},
         "full": {"n_boot": 1000, "n_test": None, "perturb": PERTURBATIONS, "spleen_perturb": PERTURBATIONS}}
LOCALIZE, PERTURB = "localize", "perturb"
TOL = 1e-9
FLAGS = ("loop", "deployed", "localize_mask", "fired", "accepted", "gated")


def rows_of(df: pd.DataFrame, unit: str) -> pd.DataFrame:
    """The rows of one unit, flag columns as bool (mixed units leave them object with NaN)."""
    d = df[df.unit == unit]
    return d.astype({c: bool for c in FLAGS if c in d and d[c].notna().all()})


def settings(profile: str, **overrides) -> dict:
    """Notebook 10's sizes for a profile (bootstrap resamples, test cases, perturbed boxes); None keeps a default,
    and a given ``perturb`` applies to the spleen slices too."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if "perturb" in given:
        given.setdefault("spleen_perturb", given["perturb"])
    out = {**SIZES.get(profile, SIZES["full"]), **given}
    for key in ("perturb", "spleen_perturb"):
        out[key] = tuple(out[key] or ())
        bad = set(out[key]) - set(PERTURBATIONS)
        if bad:
            raise ConfigError(f"unknown perturbation(s) {sorted(bad)}; choose from {list(PERTURBATIONS)}")
    return out


# --------------------------------------------------------------------------- candidates


def perturbed_boxes(box, shape, names=PERTURBATIONS, shift: float = SHIFT) -> list[tuple[str, np.ndarray]]:
    """The box scaled about its centre (``scale_<f>``) or moved by ``shift`` of its side (``shift_<dir>``), clipped
    and rounded to pixels, for each of ``names``."""
    b = np.asarray(box, float)
    w, h = b[2] - b[0] + 1, b[3] - b[1] + 1
    step = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    out = []
    for name in names:
        kind, arg = name.split("_", 1)
        if kind == "scale":
            nb = loosen_box(b, float(arg), shape)
        else:
            dx, dy = step[arg]
            nb = b + shift * np.array([dx * w, dy * h, dx * w, dy * h])
        out.append((name, clip_box(np.round(nb), shape)))
    return out


def perturbed_candidates(frame, box, names, decode_boxes=None) -> list[dict]:
    """Decodes of the perturbed boxes with their gate values (``decode_boxes(boxes) -> (masks, ious)``: a cached
    decoder; default the frame's own)."""
    pb = perturbed_boxes(box, frame.shape, names) if box is not None else []
    if not pb:
        return []
    boxes = np.stack([b for _, b in pb])
    if decode_boxes is None:
        got = [frame.decode(box=b) for b in boxes]
        masks, ious = [c.mask for c in got], [c.pred_iou for c in got]
    else:
        masks, ious = decode_boxes(boxes)
    return [{"origin": f"{PERTURB}_{n}", "stage": PERTURB, "mask": m, "loop": False,
             "gate": frame.gate_value(Candidate(mask=m, pred_iou=float(i)))} for (n, _), m, i in zip(pb, masks, ious)]


def _key(mask: np.ndarray) -> bytes:
    return np.packbits(mask).tobytes()


Scorer = Callable[[np.ndarray], float]


def scorer(truth) -> Scorer:
    """Dice of a mask against ``truth``: a test Case (``evaluation.score_case``: native resolution, the empty rule),
    a bare ground-truth mask (``evaluation.dice``), or a scorer already."""
    if callable(truth):
        return truth
    if hasattr(truth, "case_id"):
        return lambda m: ev.score_case(m, truth, with_hd95=False)["dice"]
    return lambda m: ev.dice(m, truth)


def score_candidates(cands: list[dict], gt, deployed: np.ndarray, localize: np.ndarray) -> list[dict]:
    """Distinct non-empty candidate masks (the first of identical ones kept), each with its true Dice (``gt``: see
    :func:`scorer`) and flags."""
    dice = scorer(gt)
    rows, seen, names = [], {}, {}
    dep, loc = _key(deployed), _key(localize)
    for c in cands:
        m = c["mask"]
        if not m.any():
            continue
        k = _key(m)
        if k in seen:
            seen[k]["loop"] = seen[k]["loop"] or c["loop"]
            seen[k]["copies"] += 1
            continue
        n = names.get(c["origin"], 0)
        names[c["origin"]] = n + 1
        r = {"origin": c["origin"], "method": c["origin"] + (f"#{n + 1}" if n else ""), "proposer": c["stage"],
             "gate": float(c["gate"]), "dice": dice(m), "loop": bool(c["loop"]), "deployed": k == dep,
             "localize_mask": k == loc, "area": float(m.mean()), "copies": 1}
        seen[k] = r
        rows.append(r)
    return rows


def trace_candidates(trace) -> list[dict]:
    """What the keep-best loop compared on one image: the localize mask and every skill's non-empty proposal."""
    st0 = trace.stages[0]
    out = [{"origin": LOCALIZE, "stage": LOCALIZE, "mask": st0.mask, "gate": st0.gate, "loop": True}]
    for st in trace.stages[1:]:
        out += [{"origin": o, "stage": st.name, "mask": m, "gate": g, "loop": True} for o, m, g in st.proposals]
    return out


def step_rows(masks: list[np.ndarray], gates: list[float], names: list[str], fired: list[bool],
              accepted: list[bool], proposals: list[list[np.ndarray]], gt,
              gated: list[bool] | None = None) -> list[dict]:
    """One row per skill step: Dice (``gt``: see :func:`scorer`) and gate before and after, fired / accepted, and
    the best proposal's Dice."""
    dice = scorer(gt)
    d = [dice(m) for m in masks]
    rows = []
    for i in range(1, len(masks)):
        best = max((dice(p) for p in proposals[i]), default=np.nan)
        rows.append({"method": f"step{i}_{names[i]}", "skill": names[i], "step": i, "fired": bool(fired[i]),
                     "accepted": bool(accepted[i]), "gated": True if gated is None else bool(gated[i]),
                     "gate_before": float(gates[i - 1]), "gate": float(gates[i]), "dice_before": d[i - 1],
                     "dice": d[i], "best_proposal_dice": best})
    return rows


def case_row(localize: float, deployed: float, loop_dice: list[float]) -> dict:
    """Localize, gate-kept (deployed) and best-in-hindsight Dice of one case (best true Dice among the loop's masks)."""
    best = max([localize, deployed, *loop_dice])
    return {"method": "audit", "dice": deployed, "dice_localize": localize, "dice_deployed": deployed,
            "dice_best_in_hindsight": best}


def case_candidates(pipe, image, embedding, gt, perturb=PERTURBATIONS, decode_boxes=None) -> list[dict]:
    """Candidate, step and case rows of one 2D image (``gt``, a test Case or a mask, scores; it never prompts)."""
    dice = scorer(gt)
    frame = pipe.frame(image, embedding)
    loc = pipe.localize(frame)
    trace = pipe.run(image, embedding, frame=frame, localized=loc)
    cands = trace_candidates(trace) + perturbed_candidates(frame, loc[1], perturb, decode_boxes)
    st = trace.stages
    rows = [{"unit": "candidate", **r} for r in score_candidates(cands, dice, trace.final, st[0].mask)]
    rows += [{"unit": "step", **r} for r in step_rows(
        [s.mask for s in st], [s.gate for s in st], [s.name for s in st], [s.fired for s in st],
        [s.accepted for s in st], [[m for _, m, _ in s.proposals] for s in st], dice)]
    loop = [r["dice"] for r in rows if r["unit"] == "candidate" and r["loop"]]
    rows.append({"unit": "case", **case_row(dice(st[0].mask), dice(trace.final), loop)})
    return rows


def run_validity(study, domain: str, seed: int, n_test: int | None = None, perturb=PERTURBATIONS) -> pd.DataFrame:
    """Candidate, step and case rows of one 2D domain and seed on its test split (first ``n_test`` cases)."""
    from tqdm.auto import tqdm

    pipe, _ = fit_domain(study, domain, seed)
    cases = test_cases(study, domain)
    cases = cases[:n_test] if n_test else cases
    embs = study.embeddings(cases, desc=f"{domain} test")
    rows = []
    for c, e in tqdm(list(zip(cases, embs)), desc=f"{domain} gate validity (seed {seed})", leave=False):
        base = {"domain": domain, "seed": seed, "case_id": c.case_id, "cluster": c.case_id}
        cached = lambda boxes, c=c, e=e: study.masks.decode_boxes(study.model, c.image, e, boxes)  # noqa: E731
        rows += [{**base, **r} for r in case_candidates(pipe, c.image, e, c, perturb, cached)]
    return _finish(pd.DataFrame(rows), study, domain)


def _finish(df: pd.DataFrame, study, domain: str) -> pd.DataFrame:
    return df.assign(notebook="10_gate_validity", profile=study.profile.name, source=study.source_of(domain),
                     model=study.model_key)


# --------------------------------------------------------------------------- spleen (volume gate, per slice)


class _Recorder:
    """Wraps a volume skill: hands the pipeline's VolumeState out and records every keep-best proposal by skill."""

    def __init__(self, skill, log: dict):
        self.skill, self.name, self.log = skill, skill.name, log

    def __call__(self, state):
        log = self.log
        if "state" not in log:
            log.update(state=state, localize=dict(state.cur), proposals={})
            keep_best = state.keep_best

            def recording(z, proposals):
                proposals = list(proposals)
                log["proposals"].setdefault(z, []).extend(
                    (log["skill"], c) for c in proposals if c is not None and not c.empty)
                return keep_best(z, proposals)

            state.keep_best = recording
        log["skill"] = self.name
        return self.skill(state)


def run_spleen_validity(study, seed: int, perturb=PERTURBATIONS, max_volumes: int | None = None) -> pd.DataFrame:
    """Rows of the spleen volume pipeline, one case per ground-truth slice of each test volume.

    Every candidate is re-scored with the final soft-tissue gate of its slice (trajectory cue included inside
    the fitted extent), so candidates of one slice are compared under one gate. The bootstrap unit is the volume.
    """
    vp = fit_volume_pipeline(study, seed)
    vols = study.data("spleen").volumes
    rows = []
    for vid in sorted(vols)[:max_volumes]:
        vol = vols[vid]
        body = vp.body(vol.image, vol.spacing)
        zs = vp.prior.slice_range(body, int(vp.params["range_margin"]))
        embs = dict(zip(zs, study.embeddings([vol.slice_case(z) for z in zs], desc=f"{vid} slices")))
        log: dict = {}
        skills = vp.skills
        vp.skills = [_Recorder(s, log) for s in skills]
        try:
            tr = vp.run(vol.image, embs.__getitem__, embed_crop=lambda img: study.cache.get(study.model, img),
                        frame_cache={"body": body}, spacing=vol.spacing)
        finally:
            vp.skills = skills
        if "state" not in log:
            raise ConfigError("gate validity needs a volume pipeline with at least one skill")
        state, stages = log["state"], tr.stages
        for z in vol.foreground_slices():
            if z not in state.frames:
                continue
            gt, fr = vol.mask[:, :, z], state.frames[z]
            loc = log["localize"][z]
            cands = [{"origin": VLOC, "stage": VLOC, "cand": loc, "loop": True}]
            props = log["proposals"].get(z, [])
            cands += [{"origin": c.origin, "stage": sk, "cand": c, "loop": True} for sk, c in props]
            for c in cands:
                cand = c.pop("cand")
                c.update(mask=cand.mask, gate=fr.gate_value(cand))
            cands += perturbed_candidates(fr, loc.box, perturb, lambda boxes, fr=fr: study.masks.decode_boxes(
                study.model, fr.image, fr.embedding, boxes))
            masks = [s.masks[z] for s in stages]
            base = {"domain": "spleen", "seed": seed, "case_id": f"{vid}_z{z:03d}", "cluster": vid,
                    "volume_id": vid, "slice_index": z}
            out = [{"unit": "candidate", **r} for r in score_candidates(cands, gt, masks[-1], masks[0])]
            # an accepted step that empties a slice is the trajectory's z-extent trim, not a gate decision
            out += [{"unit": "step", **r} for r in step_rows(
                masks, [s.gates[z] for s in stages], [s.name for s in stages],
                [z in s.fired for s in stages], [z in s.accepted for s in stages],
                [[c.mask for sk, c in props if sk == s.name] for s in stages], gt,
                gated=[bool(m.any()) for m in masks])]
            loop = [r["dice"] for r in out if r["unit"] == "candidate" and r["loop"]]
            out.append({"unit": "case", **case_row(ev.dice(masks[0], gt), ev.dice(masks[-1], gt), loop)})
            rows += [{**base, **r} for r in out]
    return _finish(pd.DataFrame(rows), study, "spleen")


# --------------------------------------------------------------------------- correlation and bootstrap


def within_case_rhos(cands: pd.DataFrame) -> pd.DataFrame:
    """Spearman of gate vs Dice over each case's candidates (per seed and case), with the case's cluster."""
    out = [{"seed": s, "case_id": c, "cluster": g.cluster.iloc[0], "n": len(g), "rho": ev.spearman(g.gate, g.dice)}
           for (s, c), g in cands.groupby(["seed", "case_id"], sort=True)]
    return pd.DataFrame(out, columns=["seed", "case_id", "cluster", "n", "rho"])


def _mean_rho(groups: list) -> float:
    v = np.concatenate(groups) if groups else np.array([])
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def _pooled_rho(groups: list) -> float:
    return ev.spearman(np.concatenate([g[0] for g in groups]), np.concatenate([g[1] for g in groups]))


def correlations(cands: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Within-case (mean over cases) and pooled Spearman of gate vs Dice, each with a cluster-bootstrap interval."""
    rh = within_case_rhos(cands)
    clusters = sorted(cands.cluster.unique())
    within_groups = [rh.rho[rh.cluster == k].to_numpy() for k in clusters]
    pooled_groups = [(g.gate.to_numpy(), g.dice.to_numpy()) for _, g in cands.groupby("cluster", sort=True)]
    w_lo, w_hi = ev.cluster_bootstrap(within_groups, _mean_rho, n_boot, seed)
    p_lo, p_hi = ev.cluster_bootstrap(pooled_groups, _pooled_rho, n_boot, seed + 1)
    return {"clusters": len(clusters), "cases": int(rh.rho.notna().sum()), "candidates": len(cands),
            "within": _mean_rho(within_groups), "within_lo": w_lo, "within_hi": w_hi,
            "pooled": ev.spearman(cands.gate, cands.dice), "pooled_lo": p_lo, "pooled_hi": p_hi}


def verdict(lo: float, hi: float) -> str:
    """'valid' when the CI is above 0, 'inverted' when below, 'not shown' when it holds 0, 'no interval' without one."""
    if not np.isfinite(lo):
        return "no interval"
    return "valid" if lo > 0 else "inverted" if hi < 0 else "not shown"


def correlation_table(df: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """One row per domain: within-case and pooled rho with 95% CIs, counts and a verdict on the within-case CI;
    ``loop_*``: the within-case rho over only the masks the keep-best loop compared (no perturbed boxes)."""
    cands = rows_of(df, "candidate")
    rows = []
    for i, dom in enumerate(dict.fromkeys(cands.domain)):
        d = cands[cands.domain == dom]
        c = correlations(d, n_boot, seed * 1000 + 10 * i)
        lp = correlations(d[d.loop], n_boot, seed * 1000 + 10 * i + 5)
        rows.append({"domain": dom, **c, "verdict": verdict(c["within_lo"], c["within_hi"]),
                     "loop_cases": lp["cases"], "loop_within": lp["within"], "loop_within_lo": lp["within_lo"],
                     "loop_within_hi": lp["within_hi"]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- keep-best audit


def keep_best_audit(df: pd.DataFrame) -> pd.DataFrame:
    """Per domain: cases, gated accepts (harmful / helpful), localize, gate-kept and best-in-hindsight Dice, captured.

    captured = (gate-kept - localize) / (best-in-hindsight - localize) of the means; a harmful accept is a
    gate-accepted step that lowered the case's true Dice, a missed one a rejected step whose best proposal would have
    raised it.
    """
    rows = []
    for dom in dict.fromkeys(df.domain):
        d = df[df.domain == dom]
        cs, st = rows_of(d, "case"), rows_of(d, "step")
        acc = st[st.accepted & st.gated]
        loc, dep, best = cs.dice_localize.mean(), cs.dice_deployed.mean(), cs.dice_best_in_hindsight.mean()
        gap = best - loc
        missed = st[st.fired & ~st.accepted & (st.best_proposal_dice > st.dice_before + TOL)]
        rows.append({"domain": dom, "cases": len(cs), "cases changed": int((acc.groupby(["seed", "case_id"])
                                                                             .size() > 0).sum()),
                     "accepts": len(acc), "harmful accepts": int((acc.dice < acc.dice_before - TOL).sum()),
                     "helpful accepts": int((acc.dice > acc.dice_before + TOL).sum()),
                     "missed improvements": len(missed),
                     "extent trims (not gated)": int((st.accepted & ~st.gated).sum()),
                     "localize": loc, "gate-kept": dep, "best-in-hindsight": best,
                     "captured": (dep - loc) / gap if gap > TOL else float("nan")})
    return pd.DataFrame(rows)


def skill_audit(df: pd.DataFrame) -> pd.DataFrame:
    """Per domain and skill: cases fired, accepted, harmful accepts, and mean Dice change where accepted."""
    st = rows_of(df, "step")
    rows = []
    for (dom, step, skill), g in st.groupby(["domain", "step", "skill"], sort=False):
        acc = g[g.accepted & g.gated]
        rows.append({"domain": dom, "step": int(step), "skill": skill, "cases": len(g), "fired": int(g.fired.sum()),
                     "accepted": len(acc), "harmful": int((acc.dice < acc.dice_before - TOL).sum()),
                     "mean ΔDice when accepted": float((acc.dice - acc.dice_before).mean()) if len(acc) else np.nan,
                     "extent trims (not gated)": int((g.accepted & ~g.gated).sum())})
    return pd.DataFrame(rows).sort_values(["domain", "step"], kind="stable").reset_index(drop=True)


def agreement(df: pd.DataFrame, results: pd.DataFrame, route: str | None = None) -> float:
    """Largest |deployed Dice here - deployed Dice in the domain notebook's results at its largest budget (the
    pipeline refit here)| over shared cases (NaN if none); ``route`` keeps the results where that route was the
    one deployed (the domain notebook chooses among candidates on the labels; this refits the domain's own)."""
    a = rows_of(df, "case").set_index(["seed", "case_id"]).dice_deployed
    r = at_largest_budget(results)
    r = r[(r.stage == "deployed") & ((r.route == route) if route and "route" in r else True)]
    b = r.set_index(["seed", "case_id"]).dice
    j = a.to_frame("a").join(b.rename("b"), how="inner")
    return float((j.a - j.b).abs().max()) if len(j) else float("nan")


# --------------------------------------------------------------------------- figures


def scatter_figure(df: pd.DataFrame, corr: pd.DataFrame, titles: dict | None = None, seed: int | None = None):
    """Gate vs true Dice per domain (one panel each), candidates coloured by case; rho with 95% CI in the title."""
    import matplotlib.pyplot as plt

    cands = rows_of(df, "candidate")
    if seed is not None:
        cands = cands[cands.seed == seed]
    doms = list(dict.fromkeys(cands.domain))
    fig, axes = plt.subplots(1, max(len(doms), 1), figsize=(3.3 * max(len(doms), 1), 3.4), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, dom in zip(axes[0], doms):
        g = cands[cands.domain == dom]
        for k, (_, c) in enumerate(g.groupby("case_id", sort=True)):
            col = cmap(k % 20)
            for loop, mk in ((True, "o"), (False, "x")):
                s = c[c.loop == loop]
                ax.scatter(s.gate, s.dice, s=14, marker=mk, color=col, alpha=0.8, linewidths=1)
            dep = c[c.deployed]
            ax.scatter(dep.gate, dep.dice, s=40, facecolors="none", edgecolors="k", linewidths=0.8)
        r = corr.set_index("domain").loc[dom]
        ax.set_title(f"{(titles or {}).get(dom, dom)}\nwithin-case ρ {ev.fmt_ci(r.within, r.within_lo, r.within_hi)}\n"
                     f"pooled ρ {ev.fmt_ci(r.pooled, r.pooled_lo, r.pooled_hi)}", fontsize=8)
        ax.set_xlabel("gate (GT-free)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("true Dice")
    fig.tight_layout()
    return fig


def audit_figure(audit: pd.DataFrame, titles: dict | None = None):
    """Grouped bars per domain: localize, gate-kept (deployed) and best-in-hindsight mean Dice."""
    import matplotlib.pyplot as plt

    cols = (("localize", "#cbd5e1"), ("gate-kept", "#60a5fa"), ("best-in-hindsight", "#f59e0b"))
    fig, ax = plt.subplots(figsize=(1.9 * len(audit) + 2, 3.2))
    x = np.arange(len(audit))
    for j, (c, colour) in enumerate(cols):
        ax.bar(x + (j - 1) * 0.27, audit[c], 0.27, color=colour, edgecolor="#374151", label=c)
        for i, v in enumerate(audit[c]):
            ax.text(i + (j - 1) * 0.27, v + 0.01, f"{v:.3f}", ha="center", fontsize=7, rotation=90, va="bottom")
    ax.set_xticks(x, [(titles or {}).get(d, d).split(" (")[0] for d in audit.domain], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("mean Dice")
    ax.legend(fontsize=7, loc="lower left", ncol=3)
    fig.tight_layout()
    return fig
