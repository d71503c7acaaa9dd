"""The gallery (notebook 12): per domain, the best and worst test cases by Dice of the deployed mask, read from the
results files and saved masks of notebooks 02-05 (ground truth green, prediction red)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .. import evaluation as ev
from ..results import PIPELINE_NOTEBOOKS, load_results, results_path
from .domain import DEPLOYED, load_masks


@dataclass
class Panel:
    """What one gallery panel shows (``image``, ``mask`` as viz.case_gallery reads a Case)."""

    case_id: str
    image: np.ndarray
    mask: np.ndarray


def pick_cases(df: pd.DataFrame, n: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` best (highest Dice first) and ``n`` worst (lowest first) deployed units (``ev.scored_units``) at the
    largest label budget (whose masks notebooks 02-05 save); ties broken by case id.
    With fewer than 2n units the two sets overlap."""
    from .domain import at_largest_budget

    d = at_largest_budget(ev.scored_units(df))
    d = d[d.stage == DEPLOYED].drop_duplicates("case_id").sort_values(["dice", "case_id"], kind="stable")
    return d.tail(n).iloc[::-1], d.head(n)


def _volume_panel(vol, pred: np.ndarray) -> tuple[Panel, np.ndarray, int]:
    """The ground-truth slice of largest area of a volume, with the predicted slice."""
    z = int(np.argmax(vol.mask.sum(axis=(0, 1))))
    img = np.repeat(vol.image[:, :, z, None], 3, axis=2)
    return Panel(f"{vol.volume_id} z{z}", img, vol.mask[:, :, z]), pred[:, :, z], z


def domain_panels(domain: str, profile: str, seed: int, data_of: Callable, n: int = 3,
                  title: str | None = None) -> tuple[dict, str | None]:
    """{row label: [(panel, prediction, caption)]} of one domain, or ({}, a note saying what to run)."""
    nb, title = PIPELINE_NOTEBOOKS[domain], title or domain
    run = f"run notebook {nb} (`make report PROFILE={profile}`)"
    if not results_path(nb, profile).is_file():
        return {}, f"{title}: no results of {nb} in profile {profile} yet; {run}."
    df = load_results(nb, profile)
    df = df[(df.domain == domain) & (df.seed == seed)]
    if df.empty:
        return {}, f"{title}: {nb} has no results for seed {seed} in profile {profile}; {run} with this seed."
    masks = load_masks(nb, profile, domain, seed)
    if not masks:
        return {}, f"{title}: the deployed masks of {nb} (seed {seed}) are missing; {run} again."
    data = data_of(domain)
    items = {}
    best, worst = pick_cases(df, n)
    for label, rows in (("best", best), ("worst", worst)):
        panels = []
        for _, r in rows.iterrows():
            if r.case_id not in masks:
                continue
            if domain == "spleen":
                vol = data.volumes.get(r.case_id)
                if vol is None:
                    continue
                panel, pred, _ = _volume_panel(vol, masks[r.case_id])
                cap = f"{label}: {panel.case_id}\nvolume Dice {r.dice:.3f}"
            else:
                case = next((c for c in data.test if c.case_id == r.case_id), None)
                if case is None:
                    continue
                panel, pred = Panel(case.case_id, case.image, case.mask), masks[r.case_id]
                cap = f"{label}: {case.case_id}\nDice {r.dice:.3f}"
            panels.append((panel, pred, cap))
        if panels:
            items[f"{title.split(' (')[0]}\n{label}"] = panels
    if not items:
        return {}, f"{title}: the cases in {nb}'s results are not in this run's data (another source?); {run} again."
    return items, None


def gallery(domains, profile: str, seed: int, data_of: Callable, n: int = 3,
            titles: dict | None = None) -> tuple[dict, list[str]]:
    """Panels of every domain that has results, and a note for each domain that has none."""
    panels, notes = {}, []
    for dom in domains:
        if dom not in PIPELINE_NOTEBOOKS:
            notes.append(f"{(titles or {}).get(dom, dom)}: not a study domain with a pipeline notebook; skipped.")
            continue
        items, note = domain_panels(dom, profile, seed, data_of, n, (titles or {}).get(dom, dom))
        panels.update(items)
        if note:
            notes.append(note)
    return panels, notes


# Failure classes of a deployed unit, from its Dice and the GT-box oracle's Dice on the same unit (descriptive
# thresholds, the same for every domain): what limits a route on its worst images.
ORACLE_OK, MISSED_BELOW, NEAR = 0.7, 0.1, 0.1
FAILURES = {
    "no target": "negative unit (no target in the ground truth)",
    "decoder limit": f"the GT box itself gives Dice < {ORACLE_OK}: the frozen decoder, not the localizer, fails here",
    "missed": f"deployed Dice < {MISSED_BELOW} while the GT box works: the localizer prompted the wrong place or "
              "nothing",
    "partial": f"deployed Dice more than {NEAR} below the GT box: the prompt overlaps the target but is off",
    "near oracle": f"deployed Dice within {NEAR} of the GT box",
}


def failure_classes(df: pd.DataFrame) -> pd.DataFrame:
    """Each deployed unit at the largest budget with its oracle Dice, the gap and its failure class (FAILURES)."""
    from .domain import at_largest_budget

    keys = ["domain", "seed", "case_id"]
    if df is None or df.empty:
        return pd.DataFrame(columns=keys + ["n_labels", "dice", "negative", "oracle", "gap", "failure"])
    d = at_largest_budget(ev.scored_units(df))
    dep = d[d.stage == DEPLOYED].drop_duplicates(keys)[keys + ["n_labels", "dice", "negative"]]
    orc = d[d.stage == "oracle"].drop_duplicates(keys)[keys + ["dice"]].rename(columns={"dice": "oracle"})
    m = dep.merge(orc, on=keys, how="inner")
    m["gap"] = m.oracle - m.dice
    m["failure"] = np.select(
        [m.negative.fillna(False).astype(bool), m.oracle < ORACLE_OK, m.dice < MISSED_BELOW, m.gap > NEAR],
        ["no target", "decoder limit", "missed", "partial"], default="near oracle")
    return m


def failure_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per domain and failure class: units, their share, mean deployed and oracle Dice, and the share of the
    domain's total oracle gap (sum of oracle - deployed over its units) that the class accounts for."""
    m = failure_classes(df)
    if m.empty:
        return pd.DataFrame(columns=["domain", "failure", "units", "share", "dice", "oracle", "gap_share"])
    out = []
    for dom, g in m.groupby("domain", sort=True):
        total_gap = float(g.gap.clip(lower=0).sum())
        for cls in FAILURES:
            c = g[g.failure == cls]
            if c.empty:
                continue
            out.append({"domain": dom, "failure": cls, "units": len(c), "share": len(c) / len(g),
                        "dice": ev.mean_sd(c.dice)[0], "oracle": ev.mean_sd(c.oracle)[0],
                        "gap_share": float(c.gap.clip(lower=0).sum()) / total_gap if total_gap > 0 else 0.0})
    return pd.DataFrame(out)


def failure_summary(domains, profile: str, seed: int, titles: dict | None = None) -> pd.DataFrame:
    """The failure table of every study domain whose pipeline notebook has results for ``seed`` (2D and volume
    units alike: each unit against the GT-box oracle on the same unit)."""
    frames = []
    for dom in domains:
        nb = PIPELINE_NOTEBOOKS.get(dom)
        if nb is None or not results_path(nb, profile).is_file():
            continue
        df = load_results(nb, profile)
        frames.append(df[(df.domain == dom) & (df.seed == seed)])
    if not frames:
        return failure_table(pd.DataFrame())
    out = failure_table(pd.concat(frames, ignore_index=True))
    return out.assign(domain=out.domain.map(lambda d: (titles or {}).get(d, d))) if len(out) else out


def failure_caption(profile: str, seed: int, sources: str) -> str:
    """Caption of the failure table: its data, and what each class means."""
    return (f"Deployed training-free pipeline at the largest label budget, seed {seed}, profile {profile} "
            f"({sources}): each test unit classed against the GT-box oracle on the same unit. "
            + "; ".join(f"{k}: {v}" for k, v in FAILURES.items())
            + ". gap_share: the class's part of the domain's summed oracle gap (oracle minus deployed, floored at 0).")
