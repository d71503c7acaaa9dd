"""make bench BENCH=annotate on a tiny phantom collection: two rounds of the command, round 2 encodes nothing and only
refits on the queued items' masks, and the record carries the ratios the issue's targets are judged by."""
import math

from frozenseg.bench.annotate import ANNOTATE_TARGETS, bench_annotate


def test_bench_annotate_runs_two_rounds_and_reports_its_ratios(monkeypatch):
    monkeypatch.delenv("FROZENSEG_DATA", raising=False)          # phantom images, whatever the machine holds
    r = bench_annotate("smoke", n=8, start=4, per_round=2, side=96, candidates=["agnostic", "cxr"], folds=2,
                       genome_budget=0, finalists=1)
    assert r["source"].startswith("phantom") and r["items"] == 8
    assert r["round1_encoded"] == 8, "round 1 encodes every image of the empty cache"
    assert r["round2_encoded"] == 0, "round 2 only refits and predicts: nothing is encoded again"
    assert (r["labelled_round1"], r["labelled_round2"]) == (4, 6), "the queued items' masks were added"
    assert math.isfinite(r["encode_ratio"]) and r["encode_ratio"] > 0
    assert math.isclose(r["encode_ratio"], r["command_encode_s_per_image"] / r["encoder_s_per_image"], rel_tol=0.02)
    assert set(r["round2_timings"]) == {"encode_s", "fit_s", "predict_s", "write_s"}
    assert r["round2_timings"]["encode_s"] < r["round2_timings"]["fit_s"] + r["round2_timings"]["predict_s"]
    assert r["meets_round"] == (r["round2_s"] <= ANNOTATE_TARGETS["annotate_round_max_s"])
    assert r["routing"] == {"candidates": ["agnostic", "cxr"], "folds": 2, "genome_budget": 0, "finalists": 1}
