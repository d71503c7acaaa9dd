"""Notebook 13's simulated annotation loop (frozenseg.experiments.annotate_loop): who gets corrected, what is
scored, and that a finished round is never run twice. The command itself is replaced by a stand-in that writes
what it writes (masks and the uncertainty table); tests/test_annotate.py covers the command."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from frozenseg.data.types import Case, DomainData
from frozenseg.errors import ConfigError
from frozenseg.experiments import annotate_loop as al
from frozenseg.experiments import annotate_report as rep


def _case(i: int, size: int = 24) -> Case:
    """A bright square on a dark image, its size growing with i."""
    img = np.zeros((size, size, 3), np.uint8)
    mask = np.zeros((size, size), bool)
    mask[4:8 + i % 10, 4:8 + i % 10] = True
    img[mask] = 200
    return Case(f"c{i:03d}", "kvasir", img, mask, source="phantom")


class _Study:
    """What run_domain reads of a study: its data, model key, cache, profile and source."""

    def __init__(self, train, test):
        self.model = SimpleNamespace(key="fake", cache_id="fake")
        self.cache = None
        self.profile = SimpleNamespace(name="smoke")
        self._data = DomainData(domain="kvasir", source="phantom", train=train, test=test)

    def data(self, domain):
        return self._data

    def source_of(self, domain):
        return "phantom"


def _fake_command(calls: list, u_of=lambda name: float(int(name[1:]))):
    """A stand-in for the annotate command: a mask per unlabelled image (its bright pixels, worse for odd ids: an
    empty mask) and the uncertainty table with U from ``u_of``."""
    def run(folder: Path, spec, study, seed):
        calls.append((folder, sorted(p.stem for p in (folder / "masks").glob("*.png"))))
        labelled = {p.stem for p in (folder / "masks").glob("*.png")}
        out = folder / "frozenseg" / "masks"
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for p in sorted((folder / "images").glob("*.png")):
            if p.stem in labelled:
                continue
            im = np.asarray(Image.open(p))
            m = (im[..., 0] > 100) & (int(p.stem[1:]) % 2 == 0)
            Image.fromarray(m.astype(np.uint8) * 255).save(out / f"{p.stem}.png")
            rows.append({"name": p.stem, "u": u_of(p.stem)})
        table = pd.DataFrame(rows)
        table.to_csv(folder / "frozenseg" / "uncertainty.csv", index=False)
        return {"table": table, "fit": SimpleNamespace(route="fake", cv_dice=0.5)}
    return run


def test_the_queue_takes_the_most_uncertain_pool_items_and_random_the_next_in_draw_order():
    pool = [_case(i) for i in range(6)]
    table = pd.DataFrame({"name": ["c000", "c001", "c002", "c003", "c004", "c005", "h900"],
                          "u": [0.1, 0.9, 0.3, 0.8, 0.2, 0.5, 5.0]})       # h900 is held out: never picked
    assert al.pick("hue", table, pool, {0, 3}, 2) == [1, 5]
    assert al.pick("random", table, pool, {0, 3}, 2) == [1, 2]
    with pytest.raises(ConfigError, match="unknown strategy"):
        al.pick("greedy", table, pool, set(), 1)


def test_loop_settings_are_checked():
    assert al.loop_spec({"start": 4}, ["isic"]).domain == "isic"
    with pytest.raises(ConfigError, match="unknown annotate-loop setting"):
        al.loop_spec({"strat": 1})
    with pytest.raises(ConfigError, match="one domain"):
        al.loop_spec({}, ["isic", "kvasir"])
    with pytest.raises(ConfigError, match="2D domain"):
        al.loop_spec({}, ["spleen"])
    with pytest.raises(ConfigError, match="needs 3 labels"):
        al.loop_spec({"start": 2})
    spec = al.loop_spec({"start": 3, "rounds": 5, "per_round": 2})
    with pytest.raises(ConfigError, match="pool holds 8"):
        al.pool_and_held_out([_case(i) for i in range(8)], [], spec, 0)


def test_loops_score_held_out_and_rest_and_resume_without_rerunning_a_round(tmp_path, monkeypatch):
    train, test = [_case(i) for i in range(10)], [_case(100 + i) for i in range(3)]
    study = _Study(train, test)
    spec = al.LoopSpec(start=3, rounds=2, per_round=2, candidates=("agnostic",))
    calls: list = []
    monkeypatch.setattr(al, "_command", _fake_command(calls))
    df = al.run_domain(study, spec, [0], tmp_path, progress=False)
    assert len(calls) == 1 + 2 * spec.rounds                      # round 0 once, shared by both strategies
    assert set(df.split) == {"held_out", "rest"} and set(df.strategy) == {"hue", "random"}
    held = df[df.split == "held_out"]
    assert set(held.case_id) == {c.case_id for c in test}
    assert (held.groupby(["strategy", "round"]).size() == len(test)).all()
    for (strategy, rnd), g in df[df.split == "rest"].groupby(["strategy", "round"]):
        assert len(g) == len(train) - spec.start - rnd * spec.per_round   # the rest shrinks as labels are added
    # odd ids get an empty mask from the stand-in: Dice 0 there, 1 on even ids
    assert set(np.round(df.dice, 6)) <= {0.0, 1.0}
    assert (df.dice == (df.case_id.str[1:].astype(int) % 2 == 0)).all()
    # the queue picked the highest U (highest ids) among the pool's unlabelled items
    order = al.pool_and_held_out(train, test, spec, 0)[0]
    hue_masks = [c[1] for c in calls if c[0].name == "hue"][-1]
    rnd_masks = [c[1] for c in calls if c[0].name == "random"][-1]
    start = {c.case_id for c in order[:3]}
    assert set(rnd_masks) == start | {c.case_id for c in order[3:7]}
    rest_ids = sorted((c.case_id for c in order[3:]), reverse=True)
    assert set(hue_masks) - start == set(rest_ids[:4])
    n = len(calls)
    again = al.run_domain(study, spec, [0], tmp_path, progress=False)
    assert len(calls) == n                                        # every round was recorded: nothing reruns
    pd.testing.assert_frame_equal(df, again)


def test_curves_and_gain_pair_strategies_by_unit_and_seed():
    rows = []
    for seed in (0, 1):
        for rnd in (0, 1):
            for i in range(6):
                for strategy in ("hue", "random"):
                    d = 0.5 + (0.1 if strategy == "hue" and rnd == 1 else 0.0)
                    rows.append({"seed": seed, "round": rnd, "n_labels": 3 + 2 * rnd, "case_id": f"h{i}",
                                 "split": "held_out", "strategy": strategy, "dice": d, "unit": "case"})
    df = pd.DataFrame(rows)
    gain = al.gain_table(df)
    assert list(gain.hue_minus_random.round(6)) == [0.0, 0.1] and list(gain.pairs) == [12, 12]
    curves = al.curve_table(df)
    assert len(curves) == 4 and set(curves.n) == {6}
    assert "above" in rep.gain_note(gain.assign(lo=0.05, hi=0.15))
    assert "not distinguishable" in rep.gain_note(gain.assign(lo=-0.05, hi=0.15))


def test_a_crash_after_a_round_ran_but_before_it_was_recorded_corrects_the_same_items(tmp_path, monkeypatch):
    train, test = [_case(i) for i in range(10)], [_case(100 + i) for i in range(2)]
    study = _Study(train, test)
    spec = al.LoopSpec(start=3, rounds=2, per_round=2, candidates=("agnostic",))
    monkeypatch.setattr(al, "_command", _fake_command([]))
    clean = al.run_domain(study, spec, [0], tmp_path / "clean", progress=False)
    real_round, n = al._round, {"calls": 0}

    def crashing_round(*a, **k):
        out = real_round(*a, **k)                 # the command ran and rewrote uncertainty.csv ...
        n["calls"] += 1
        if n["calls"] == 2:                       # ... and the process died before loop.json recorded the round
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(al, "_round", crashing_round)
    with pytest.raises(KeyboardInterrupt):
        al.run_domain(study, spec, [0], tmp_path / "crash", progress=False)
    monkeypatch.setattr(al, "_round", real_round)
    resumed = al.run_domain(study, spec, [0], tmp_path / "crash", progress=False)
    cols = ["strategy", "round", "split", "case_id", "dice"]
    pd.testing.assert_frame_equal(clean[cols].reset_index(drop=True), resumed[cols].reset_index(drop=True))
