"""The annotate command's loop with a simulated annotator (notebook 13): what queueing the uncertain items buys.

A collection is made from a domain's data: ``images/`` holds the label pool (the train split, in the seeded label
draw's order) and the held-out test units; ``masks/`` starts with the first ``start`` pool images of the draw. Each
round runs :func:`frozenseg.annotate.annotate` on the folder exactly as a user would (route chosen by
cross-validation on the labels, every unlabelled item predicted, HUE written to ``uncertainty.csv``), scores the
masks it wrote, and then the simulated annotator "corrects" ``per_round`` pool items by copying their own ground-truth
masks into ``masks/``:

* ``hue``: the most uncertain pool items of the round's ``uncertainty.csv`` (the command's queue with the held-out
  units left out, since the annotator never labels those);
* ``random``: the next unlabelled pool items in the label draw's order, the same budget (so random choice at L
  labels uses exactly the study's seeded L-label draw, as in notebook 11's loop).

Round 0 (the start set) is shared by both strategies: its folder is copied, so the second strategy resumes it.

Two splits are scored after each round: ``held_out``, the fixed test units (never labelled; the fair comparison of
the strategies), and ``rest``, the pool items still unlabelled (what the issue asks for; uncertainty queueing removes
the hardest items from it, so it flatters ``hue``). The ground truth is read only by the annotator and the scorer.
Each finished round is written atomically, so an interrupted loop resumes after its last finished round.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .. import evaluation as ev
from ..annotate.outputs import read_png_mask
from ..data.splits import nested_order
from ..data.types import Case
from ..errors import ConfigError
from ..io import write_json_atomic

NOTEBOOK = "13_annotate_loop"
STRATEGIES = ("hue", "random")
SPLITS = ("held_out", "rest")
STATE_VERSION = 1


@dataclass(frozen=True)
class LoopSpec:
    """One simulated annotation loop's sizes and the command's routing settings."""

    domain: str = "kvasir"
    start: int = 10                  # labelled pool images before round 0
    rounds: int = 3                  # corrections after round 0
    per_round: int = 5               # items the annotator corrects per round (the command's --batch)
    pool: int | None = None          # pool images (the first of the label draw); None: the whole train split
    held_out: int | None = None      # held-out test units; None: the profile's test split
    route: str = "auto"              # the command's --route
    candidates: tuple | None = None  # None: the command's default (every route)
    folds: int | None = None
    genome_budget: int | None = None
    finalists: int | None = None

    def __post_init__(self):
        if self.start < 3 and self.route == "auto":
            raise ConfigError(f"the command chooses its route by cross-validation and needs 3 labels; start={self.start}")
        if self.per_round < 1 or self.rounds < 0:
            raise ConfigError(f"need per_round >= 1 and rounds >= 0 (got {self.per_round}, {self.rounds})")


DEFAULTS = {**asdict(LoopSpec()), "seeds": (0, 1, 2)}


def profile_params(profile) -> dict:
    """The loop's settings under a profile (name or Profile): DEFAULTS, then the profile's ``annotate`` entry."""
    from ..config import get_profile

    prof = get_profile(profile) if isinstance(profile, str) else profile
    return {**DEFAULTS, **(prof.annotate or {})}


def loop_spec(params: dict | None, domains=None) -> LoopSpec:
    """A LoopSpec from the loop's settings (unknown keys are an error); ``domains`` (one 2D domain, or None for the
    settings' own) overrides the loop's domain."""
    params = {**DEFAULTS, **(params or {})}
    params.pop("seeds")
    bad = set(params) - set(DEFAULTS)
    if bad:
        raise ConfigError(f"unknown annotate-loop setting(s) {sorted(bad)}; known: {sorted(DEFAULTS)}")
    if domains:
        if len(list(domains)) != 1:
            raise ConfigError(f"the annotate loop runs on one domain; got {list(domains)}")
        params["domain"] = list(domains)[0]
    if params["domain"] == "spleen":
        raise ConfigError("the annotate loop runs on a 2D domain (isic, kvasir, cxr or a 2D folder domain), "
                          "not on spleen volumes")
    if params.get("candidates") is not None:
        params["candidates"] = tuple(params["candidates"])
    return LoopSpec(**params)


def work_root(profile: str) -> Path:
    """Where the loops' collections and the command's outputs live (the cache, never the repository)."""
    from .. import paths

    return paths.cache_root() / "annotate_loop" / profile


def _safe(name: str) -> str:
    """A case id as a file stem."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))


def _png(path: Path, array: np.ndarray) -> None:
    """Write a PNG (an image, or a bool mask as 0/255) unless it is already there."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        data = np.asarray(array)
        Image.fromarray(data.astype(np.uint8) * 255 if data.dtype == bool else data).save(path, format="PNG")


def pool_and_held_out(train: list[Case], test: list[Case], spec: LoopSpec, seed: int) -> tuple[list[Case], list[Case]]:
    """The pool in the seeded label draw's order (the first ``start`` are round 0's labels), and the held-out units."""
    order = nested_order(len(train), seed)
    pool = [train[i] for i in order[: spec.pool or len(train)]]
    held = list(test[: spec.held_out]) if spec.held_out is not None else list(test)
    if len(pool) < spec.start + spec.rounds * spec.per_round:
        raise ConfigError(f"the pool holds {len(pool)} images, fewer than start + rounds x per_round = "
                          f"{spec.start + spec.rounds * spec.per_round}; shrink the loop or grow the pool")
    return pool, held


def make_folder(folder: Path, pool: list[Case], held: list[Case], labelled: list[int]) -> None:
    """images/ with every pool and held-out image, masks/ with the labelled pool images' masks."""
    names = [_safe(c.case_id) for c in pool + held]
    if len(set(names)) != len(names):
        raise ConfigError("two cases share a file name in the annotate loop's folder; case ids must be unique")
    for c, n in zip(pool + held, names):
        _png(folder / "images" / f"{n}.png", c.image)
    for i in labelled:
        _png(folder / "masks" / f"{_safe(pool[i].case_id)}.png", pool[i].mask)


def score_round(out: Path, table: pd.DataFrame, pool: list[Case], held: list[Case], labelled: set[int]) -> list[dict]:
    """Scored rows of one round's written masks: every held-out unit and every still-unlabelled pool item, with
    the item's HUE U from the round's uncertainty table."""
    u = dict(zip(table.name, table.u))
    rows = []
    for split, cases in (("held_out", held), ("rest", [c for i, c in enumerate(pool) if i not in labelled])):
        preds = [read_png_mask(out / "masks" / f"{_safe(c.case_id)}.png", c.mask.shape) for c in cases]
        for r in ev.unit_rows(cases, preds, with_hd95=False):
            rows.append({**r, "split": split, "u": float(u.get(_safe(r["case_id"]), np.nan))})
    return rows


def pick(strategy: str, table: pd.DataFrame, pool: list[Case], labelled: set[int], k: int) -> list[int]:
    """The pool items the annotator corrects next: the ``k`` most uncertain unlabelled ones by the round's
    uncertainty table (``hue``), or the next ``k`` unlabelled ones in the pool's (seeded, random) draw order."""
    free = [i for i in range(len(pool)) if i not in labelled]
    if strategy == "hue":
        rank = {n: r for r, n in enumerate(table.sort_values("u", ascending=False, kind="stable").name)}
        return sorted(free, key=lambda i: rank.get(_safe(pool[i].case_id), len(rank)))[:k]
    if strategy == "random":
        return free[:k]
    raise ConfigError(f"unknown strategy {strategy!r}; use one of {STRATEGIES}")


def _command(folder: Path, spec: LoopSpec, study, seed: int) -> dict:
    """One round of the annotate command on ``folder`` (the study's model and embedding cache), quietly."""
    from ..annotate import annotate

    return annotate(folder, model=study.model, cache=study.cache, route=spec.route, batch=spec.per_round,
                    candidates=list(spec.candidates) if spec.candidates else None, folds=spec.folds,
                    genome_budget=spec.genome_budget, finalists=spec.finalists, seed=seed, max_side=None,
                    progress=False, log=lambda _s: None)


def _state(path: Path) -> dict:
    """A loop's finished rounds (empty when none or written under another version)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"rounds": []}
    return state if state.get("version") == STATE_VERSION else {"rounds": []}


def run_loop(study, spec: LoopSpec, seed: int, strategy: str, work: Path, pool: list[Case], held: list[Case],
             start_folder: Path) -> list[dict]:
    """Rounds 1.. of one strategy from the shared round-0 folder; returns every round's rows (round 0's included),
    resuming after the last finished round recorded in ``work/loop.json``."""
    state_path = work / "loop.json"
    state = _state(state_path)
    if not state["rounds"]:
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(start_folder, work)
        state = json.loads((start_folder / "loop.json").read_text())
    while len(state["rounds"]) <= spec.rounds:
        last = state["rounds"][-1]
        labelled = set(last["labelled"])
        if state.get("pending") is None:               # the pick is recorded before its masks are written, so a
            table = pd.read_csv(work / "frozenseg" / "uncertainty.csv")   # resumed round corrects the same items
            state["pending"] = pick(strategy, table, pool, labelled, spec.per_round)
            write_json_atomic(state_path, state)
        new = state["pending"]
        labelled |= set(new)
        make_folder(work, pool, held, sorted(labelled))
        state["rounds"].append(_round(work, spec, study, seed, pool, held, labelled, strategy, new))
        state["pending"] = None
        write_json_atomic(state_path, state)
    return [r for rnd in state["rounds"] for r in rnd["rows"]]


def _round(folder: Path, spec: LoopSpec, study, seed: int, pool, held, labelled: set[int], strategy: str,
           added: list[int]) -> dict:
    """Run the command once on the folder and score it: the round's record."""
    t0 = time.perf_counter()
    res = _command(folder, spec, study, seed)
    wall = time.perf_counter() - t0
    n = len(labelled)
    fit = res["fit"]
    meta = {"strategy": strategy, "n_labels": n, "route": fit.route, "cv_dice": fit.cv_dice, "wall_s": wall,
            **{k: v for k, v in res.get("timings", {}).items() if k in ("fit_s", "predict_s")}}
    rows = [{**r, **meta} for r in score_round(folder / "frozenseg", res["table"], pool, held, labelled)]
    return {"labelled": sorted(labelled), "added": sorted(added), "rows": rows, **meta}


def start_round(study, spec: LoopSpec, seed: int, folder: Path, pool, held) -> None:
    """Round 0 (the start set), shared by both strategies; written once to ``folder`` with its ``loop.json``."""
    state_path = folder / "loop.json"
    if _state(state_path)["rounds"]:
        return
    labelled = set(range(spec.start))
    make_folder(folder, pool, held, sorted(labelled))
    rnd = _round(folder, spec, study, seed, pool, held, labelled, "start", [])
    write_json_atomic(state_path, {"version": STATE_VERSION, "rounds": [rnd]})


def _folder_key(study, spec: LoopSpec, seed: int, pool: list[Case], held: list[Case]) -> str:
    """A loop's folder name: the seed and a hash of its images, labels, settings and model, so a changed input
    starts afresh instead of resuming a stale folder."""
    from ..cache import case_key

    blob = json.dumps({"spec": asdict(spec), "model": study.model.cache_id, "seed": seed,
                       "pool": [case_key(c) for c in pool], "held": [case_key(c) for c in held]}, sort_keys=True,
                      default=str)
    return f"seed{seed}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def run_domain(study, spec: LoopSpec, seeds, work_root: Path, progress: bool = True) -> pd.DataFrame:
    """Every seed's shared start round and both strategies' loops on one domain; tidy rows (one per scored item,
    round, strategy and seed), round 0 repeated under each strategy so both curves start at the same point."""
    from tqdm.auto import tqdm

    data = study.data(spec.domain)
    rows = []
    todo = [(s, st) for s in seeds for st in STRATEGIES]
    bar = tqdm(total=len(todo), desc=f"annotate loop ({spec.domain})", unit="loop", disable=not progress)
    for seed in seeds:
        pool, held = pool_and_held_out(list(data.train), ev.test_units(data, spec.held_out), spec, seed)
        base = work_root / spec.domain / _folder_key(study, spec, seed, pool, held)
        start_round(study, spec, seed, base / "start", pool, held)
        for strategy in STRATEGIES:
            for r in run_loop(study, spec, seed, strategy, base / strategy, pool, held, base / "start"):
                rows.append({**r, "seed": seed, "strategy": strategy})
            bar.update()
    bar.close()
    df = pd.DataFrame(rows)
    df["round"] = (df.n_labels - spec.start) // spec.per_round
    return df.assign(notebook=NOTEBOOK, profile=study.profile.name, domain=spec.domain,
                     source=study.source_of(spec.domain), model=study.model.key, method=lambda d: d.strategy + "_r" + d["round"].astype(str) + "_" + d.split)


def curve_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice per strategy, split and round with its 95% cluster-bootstrap interval (items are the clusters,
    pooled over seeds), and the per-seed means' spread; the rows that count are the scored units."""
    units = ev.scored_units(df)
    by = ["split", "strategy", "round"]
    spread = ev.seed_summary(units, by).set_index(by)
    out = []
    for key, g in units.groupby(by, sort=True):
        iv = ev.unit_interval(g, cluster="case_id")
        out.append({"split": key[0], "strategy": key[1], "round": int(key[2]), "labels": int(g.n_labels.iloc[0]),
                    "dice": iv["mean"], "lo": iv["lo"], "hi": iv["hi"], "seed_sd": spread.loc[key, "sd"],
                    "seeds": int(spread.loc[key, "seeds"]), "n": iv["n"], "equal": iv["equal"]})
    return pd.DataFrame(out)


def gain_table(df: pd.DataFrame, split: str = "held_out") -> pd.DataFrame:
    """Per round: held-out Dice of the uncertainty-queued loop minus the random one, paired by item and seed, with a
    95% cluster-bootstrap interval (items are the clusters)."""
    units = ev.scored_units(df[df.split == split])
    wide = units.pivot_table(index=["round", "seed", "case_id"], columns="strategy", values="dice").dropna()
    out = []
    for rnd, g in wide.reset_index().groupby("round"):
        iv = ev.mean_interval((g["hue"] - g["random"]).to_numpy(), g.case_id.to_numpy())
        labels = int(units[units["round"] == rnd].n_labels.iloc[0])
        out.append({"round": int(rnd), "labels": labels, "hue_minus_random": iv["mean"], "lo": iv["lo"],
                    "hi": iv["hi"], "pairs": len(g), "units": iv["n"]})
    return pd.DataFrame(out)
