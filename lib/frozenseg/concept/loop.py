"""The active annotation loop: fit, score uncertainty, send the top-k to an annotator, refit warm-started.

The pool is given in the order of the study's seeded label draw (``frozenseg.data.splits.nested_order``, the draw
the pipeline, the networks and the tuned decoder share): the start set is its first ``start`` images and random
selection takes the next ones in that order, so random selection at L labels is exactly the shared L-label draw;
HUE picks from the same pool by U. Images without a target cost a label but teach a concept nothing: a fit uses
the labelled images that have one.

The loop's state is written atomically after every finished round, so an interrupted loop resumes from
the last finished round and gives the same result as an uninterrupted run with the same seed.

With ``test_u="all"`` the test split is also scored in the source's evaluation mode: each test image keeps
the mask of whichever round's concept gave it the lowest HUE uncertainty U so far (GT-free: the choice
reads U only). Those rows have split ``"test_lowest_u"`` beside the plain per-round ``"test"`` rows.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ConfigError, DataError
from ..io import write_json_atomic
from .. import evaluation as ev
from .core import Concept, FitSettings, fit_concept, predict_logits
from .hue import hue_scores

Annotator = Callable[[int], np.ndarray]      # pool index -> the corrected (ground-truth) mask
STRATEGIES = ("hue", "random")
STATE_VERSION = 3
LOWEST_U_SPLIT = "test_lowest_u"


def ground_truth_annotator(masks) -> Annotator:
    """The study's simulated annotator: returns the ground-truth mask of a pool image."""
    return lambda i: np.asarray(masks[i], dtype=bool)


@dataclass(frozen=True)
class LoopConfig:
    """What one loop run depends on (a state file written under another config is refused)."""

    strategy: str = "hue"            # "hue": top-k by U; "random": the next k of the seeded draw (same budget)
    start: int = 5                   # labelled images before round 1: the first ``start`` of the pool's draw order
    rounds: int = 5                  # refits after the start fit
    per_round: int = 5               # images sent to the annotator per round
    seed: int = 0                    # the concept's initial tokens (the pool's order carries the label draw's seed)
    settings: FitSettings = FitSettings()
    test_u: str = "last"             # U on the test split: "last" round, "all" rounds (+ lowest-U rows) or "none"
    refit_epochs: int | None = None  # epochs of each warm-started refit (rounds >= 1); None: settings.epochs

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown selection strategy {self.strategy!r}; use one of {STRATEGIES}")
        if self.start < 1 or self.per_round < 1 or self.rounds < 0:
            raise ConfigError(f"need start >= 1, per_round >= 1, rounds >= 0 (got {self.start}, "
                              f"{self.per_round}, {self.rounds})")
        if self.test_u not in ("last", "all", "none"):
            raise ConfigError(f"test_u must be 'last', 'all' or 'none', not {self.test_u!r}")
        if self.refit_epochs is not None and self.refit_epochs < 0:
            raise ConfigError(f"refit_epochs must be >= 0 or None, not {self.refit_epochs}")

    def refit_settings(self) -> FitSettings:
        """Fit settings of the warm-started refits (rounds >= 1)."""
        return self.settings if self.refit_epochs is None else self.settings.with_(epochs=self.refit_epochs)

    def fingerprint(self, n_pool: int, n_test: int) -> dict:
        """JSON-able identity of this run (config plus data sizes)."""
        return {**asdict(self), "n_pool": n_pool, "n_test": n_test, "version": STATE_VERSION}


@dataclass
class LoopState:
    """Progress after a finished round: labelled pool indices, concept tokens, result rows."""

    round: int
    labelled: list[int]
    tokens: list
    rows: list[dict] = field(default_factory=list)
    losses: list[list[float]] = field(default_factory=list)
    fit_s: list[float] = field(default_factory=list)        # wall seconds of each round's fit
    history: list = field(default_factory=list)             # tokens of every finished round

    def at_round(self, rnd: int) -> "LoopState":
        """The state as it was after round ``rnd`` (e.g. round 0, to share with another strategy)."""
        lab = sorted(r["index"] for r in self.rows if r["round"] == rnd and r["split"] == "pool" and r["labelled"])
        return LoopState(round=rnd, labelled=lab, tokens=self.history[rnd], rows=[r for r in self.rows if r["round"] <= rnd],
                         losses=self.losses[: rnd + 1], fit_s=self.fit_s[: rnd + 1], history=self.history[: rnd + 1])

    def concept(self, backend_key: str) -> Concept:
        """The concept of the last finished round."""
        return Concept(tokens=np.asarray(self.tokens, dtype=np.float32), backend=backend_key,
                       n_support=len(self.labelled))


def start_indices(n_pool: int, start: int) -> list[int]:
    """The start set: the first ``start`` pool images (the pool is in the seeded draw's order), shared by every
    strategy."""
    if start > n_pool:
        raise ConfigError(f"start set of {start} images needs a pool of at least {start}, got {n_pool}")
    return list(range(start))


def select(strategy: str, candidates: list[int], u: dict[int, float], k: int) -> list[int]:
    """The next ``k`` pool indices to annotate: top-k by U (ties by index), or for random selection the next ``k``
    of the seeded draw (the lowest unlabelled pool indices)."""
    k = min(k, len(candidates))
    if strategy == "hue":
        missing = [i for i in candidates if i not in u]
        if missing:
            raise DataError(None, f"no uncertainty for pool images {missing[:5]}", "score the pool before selecting")
        return sorted(sorted(candidates, key=lambda i: (-u[i], i))[:k])
    return sorted(candidates)[:k]


def support(order: list[int], labels) -> list[int]:
    """The labelled pool indices a concept is fitted on: those whose mask has a target (DataError when none)."""
    keep = [i for i in order if labels[i].any()]
    if not keep:
        raise DataError(None, f"none of the {len(order)} labelled pool images has a target, so there is nothing to "
                        "learn a concept from", "start from more labelled images (the loop's `start`)")
    return keep


def _load_state(path: Path | None, fp: dict) -> LoopState | None:
    """The saved state of this run, if any; a state from another config raises ConfigError."""
    if path is None or not Path(path).is_file():
        return None
    rec = json.loads(Path(path).read_text())
    if rec.get("fingerprint") != json.loads(json.dumps(fp, default=str)):
        raise ConfigError(f"{path} holds a loop with other settings; delete it to start over")
    return LoopState(**rec["state"])


def _save_state(path: Path | None, fp: dict, state: LoopState, labels: "_Labels") -> None:
    """Write the collected masks, then the state, each atomically (temp file + rename)."""
    if path is not None:
        labels.save()
        write_json_atomic(path, {"fingerprint": fp, "state": asdict(state)})


class _Labels:
    """Masks from the annotator, asked once per image and kept beside the state file (bit-packed npz)."""

    def __init__(self, annotator: Annotator, state_path: str | Path | None):
        self.annotator, self.masks = annotator, {}
        self.path = None if state_path is None else Path(state_path).with_suffix(".masks.npz")
        if self.path is not None and self.path.is_file():
            with np.load(self.path) as z:
                for key in z.files:
                    if key.startswith("m"):
                        shape = tuple(int(v) for v in z["s" + key[1:]])
                        bits = np.unpackbits(z[key], count=int(np.prod(shape)))
                        self.masks[int(key[1:])] = bits.reshape(shape).astype(bool)

    def __getitem__(self, i: int) -> np.ndarray:
        """The annotated mask of pool image ``i`` (asks the annotator the first time)."""
        if i not in self.masks:
            m = np.asarray(self.annotator(int(i)))
            if m.ndim != 2:
                raise DataError(None, f"annotator returned a {m.shape} array for pool image {i}", "return an (H, W) mask")
            self.masks[i] = m.astype(bool)
        return self.masks[i]

    def save(self) -> None:
        """Write every mask collected so far atomically."""
        from ..io import atomic_path

        arrays = {}
        for i, m in self.masks.items():
            arrays[f"m{i}"], arrays[f"s{i}"] = np.packbits(m.reshape(-1)), np.asarray(m.shape)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)


def merge_picks(picks: dict[int, tuple[int, float]], rows) -> dict[int, tuple[int, float]]:
    """Update per-test-image picks ``index -> (round, U)`` with test rows: keep the lowest U (ties: later round).

    GT-free by construction: only ``round``, ``index`` and ``u`` of each row are read.
    """
    out = dict(picks)
    for r in sorted((r for r in rows if r.get("split") == "test" and r.get("index") is not None and "u" in r),
                    key=lambda r: r["round"]):
        j, u = int(r["index"]), float(r["u"])
        if j not in out or u <= out[j][1]:
            out[j] = (int(r["round"]), u)
    return out


def lowest_u_picks(rows, upto: int | None = None) -> dict[int, tuple[int, float]]:
    """Per test image: (round, U) of the round (<= ``upto``) whose concept gave it the lowest U."""
    return merge_picks({}, [r for r in rows if upto is None or r["round"] <= upto])


class _LowestU:
    """Running lowest-U picks of the test images and the picked masks (rebuilt from round tokens on resume)."""

    def __init__(self, backend, state: "LoopState | None", test_feats):
        self.picks, self.masks = {}, {}
        if state is None:
            return
        self.picks = lowest_u_picks(state.rows)
        for rnd in sorted({p[0] for p in self.picks.values()}):
            idx = [j for j, p in self.picks.items() if p[0] == rnd]
            concept = Concept(tokens=np.asarray(state.history[rnd], dtype=np.float32), backend=backend.key)
            for j, lg in zip(idx, predict_logits(backend, concept, [test_feats[j] for j in idx])):
                self.masks[j] = lg > 0

    def rows(self, round_rows: list[dict], preds: list[np.ndarray], base: dict, test_scorer) -> list[dict]:
        """Take this round's test rows into the picks; score the picked masks (split LOWEST_U_SPLIT)."""
        new = merge_picks(self.picks, round_rows)
        for j, (rnd, _) in new.items():
            if rnd == base["round"]:
                self.masks[j] = preds[j]
        self.picks = new
        if len(self.masks) != len(preds):
            return []
        out = []
        for r in test_scorer([self.masks[j] for j in range(len(preds))]):
            j = r.get("index")
            pick = {"u": self.picks[j][1], "u_round": self.picks[j][0]} if j is not None else {}
            out.append({**base, **r, "split": LOWEST_U_SPLIT, **pick})
        return out


def _evaluate(backend, cfg: LoopConfig, rnd: int, last: bool, concept: Concept, labelled: set[int], pool_feats,
              pool_truth, test_feats, test_scorer, lowest: _LowestU | None = None) -> list[dict]:
    """Rows of one round: every pool image (U where needed, Dice vs truth), every test image, lowest-U rows."""
    base = {"round": rnd, "n_labelled": len(labelled), "concept_flag": concept.flag}
    unl = [i for i in range(len(pool_feats)) if i not in labelled]
    rows = []
    if unl and (cfg.strategy == "hue" or pool_truth is not None):
        lg = predict_logits(backend, concept, [pool_feats[i] for i in unl])
        hues = hue_scores(backend, [pool_feats[i] for i in unl], lg) if cfg.strategy == "hue" else [None] * len(unl)
        for i, g, h in zip(unl, lg, hues):
            r = {**base, "split": "pool", "index": i, "labelled": False, **(h.to_dict() if h else {})}
            if pool_truth is not None:
                r.update(dice=ev.dice(g > 0, pool_truth[i]), iou=ev.iou(g > 0, pool_truth[i]))
            rows.append(r)
    rows += [{**base, "split": "pool", "index": i, "labelled": True, "dice": 1.0, "iou": 1.0} for i in sorted(labelled)]
    if test_feats:
        lg = predict_logits(backend, concept, test_feats)
        with_u = cfg.test_u == "all" or (cfg.test_u == "last" and last)
        hues = hue_scores(backend, test_feats, lg) if with_u else [None] * len(lg)
        preds = [g > 0 for g in lg]
        test_rows = []
        for r in test_scorer(preds):
            j = r.get("index")
            h = hues[j] if j is not None and j < len(hues) and hues[j] is not None else None
            test_rows.append({**base, "split": "test", "labelled": False, **r, **(h.to_dict() if h else {})})
        rows += test_rows
        if cfg.test_u == "all" and lowest is not None:
            rows += lowest.rows(test_rows, preds, {**base, "labelled": False}, test_scorer)
    return rows


def default_scorer(test_masks):
    """Per-case Dice / IoU of test predictions against bare masks (rows carry the test index); a study scores its
    test cases with ``experiments.concept_search.test_scorer`` (native resolution, volumes in 3D)."""
    return lambda preds: [{"index": j, "dice": ev.dice(p, m), "iou": ev.iou(p, m)}
                          for j, (p, m) in enumerate(zip(preds, test_masks))]


def annotation_loop(backend, pool_feats, annotator: Annotator, cfg: LoopConfig, test_feats=None, test_masks=None,
                    pool_truth=None, state_path: str | Path | None = None, warm_round0: LoopState | None = None,
                    test_scorer=None, tag: dict | None = None) -> LoopState:
    """Run (or resume) the loop; returns the final state, whose ``rows`` hold every round's results."""
    n_pool, test_feats = len(pool_feats), list(test_feats or [])
    if test_feats and test_scorer is None:
        if test_masks is None or len(test_masks) != len(test_feats):
            raise ConfigError("test_feats need test_masks of the same length (or a test_scorer)")
        test_scorer = default_scorer(test_masks)
    fp = {**cfg.fingerprint(n_pool, len(test_feats)), "tag": tag or {}}
    state = _load_state(state_path, fp) or warm_round0
    labels = _Labels(annotator, state_path)
    lowest = _LowestU(backend, state, test_feats) if cfg.test_u == "all" and test_feats else None
    if state is None:
        labelled = start_indices(n_pool, cfg.start)
        fit_on = support(labelled, labels)
        t0 = time.perf_counter()
        concept = fit_concept(backend, [pool_feats[i] for i in fit_on], [labels[i] for i in fit_on],
                              cfg.settings, seed=cfg.seed)
        fit_s = time.perf_counter() - t0
        rows = _evaluate(backend, cfg, 0, cfg.rounds == 0, concept, set(labelled), pool_feats, pool_truth,
                         test_feats, test_scorer, lowest)
        state = LoopState(round=0, labelled=labelled, tokens=concept.tokens.tolist(), rows=rows,
                          losses=[concept.losses], fit_s=[fit_s], history=[concept.tokens.tolist()])
        _save_state(state_path, fp, state, labels)
    elif state is warm_round0:
        if warm_round0.round != 0 or warm_round0.labelled != start_indices(n_pool, cfg.start):
            raise ConfigError("warm_round0 must be round 0 of a loop with the same start size")
        if cfg.strategy == "hue" and not _has_pool_u(warm_round0):
            raise ConfigError("warm_round0 lacks pool uncertainties; run the 'hue' loop first and share its round 0")
        state = LoopState(**json.loads(json.dumps(asdict(warm_round0))))   # a private copy
        _save_state(state_path, fp, state, labels)
    while state.round < cfg.rounds:
        state = _next_round(backend, cfg, state, pool_feats, labels, pool_truth, test_feats, test_scorer, lowest)
        _save_state(state_path, fp, state, labels)
    return state


def _has_pool_u(state: LoopState) -> bool:
    """Whether the last round scored U on every unlabelled pool image."""
    rows = [r for r in state.rows if r["round"] == state.round and r["split"] == "pool" and not r["labelled"]]
    return all("u" in r for r in rows)


def _next_round(backend, cfg, state: LoopState, pool_feats, labels, pool_truth, test_feats, test_scorer,
                lowest: _LowestU | None = None) -> LoopState:
    """Select, annotate, refit warm-started (``cfg.refit_epochs``), evaluate: one round."""
    rnd = state.round + 1
    labelled = set(state.labelled)
    cand = [i for i in range(len(pool_feats)) if i not in labelled]
    u = {r["index"]: r["u"] for r in state.rows if r["round"] == state.round and r["split"] == "pool" and "u" in r}
    picked = select(cfg.strategy, cand, u, cfg.per_round)
    labelled |= set(picked)
    order = sorted(labelled)
    fit_on = support(order, labels)
    t0 = time.perf_counter()
    concept = fit_concept(backend, [pool_feats[i] for i in fit_on], [labels[i] for i in fit_on], cfg.refit_settings(),
                          seed=cfg.seed, init=state.concept(backend.key))
    fit_s = time.perf_counter() - t0
    rows = _evaluate(backend, cfg, rnd, rnd == cfg.rounds, concept, labelled, pool_feats, pool_truth, test_feats,
                     test_scorer, lowest)
    for r in rows:
        r["picked"] = r["split"] == "pool" and r["index"] in picked
    return LoopState(round=rnd, labelled=order, tokens=concept.tokens.tolist(), rows=state.rows + rows,
                     losses=state.losses + [concept.losses], fit_s=state.fit_s + [fit_s],
                     history=state.history + [concept.tokens.tolist()])
