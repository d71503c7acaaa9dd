"""Benchmark part ``annotate`` (frozenseg.bench.annotate) on a tiny phantom collection: two rounds, the second
encodes nothing, and the ratios it reports are computed from its own timings."""
import math

import pytest

pytestmark = pytest.mark.slow


def test_two_rounds_and_the_second_encodes_nothing(monkeypatch, tmp_path):
    from frozenseg.bench.annotate import bench_annotate

    monkeypatch.delenv("FROZENSEG_DATA", raising=False)
    monkeypatch.setenv("FROZENSEG_CACHE", str(tmp_path / "cache"))
    out = bench_annotate("smoke", n=6, start=3, per_round=1, side=128)
    assert out["source"].startswith("phantom") and out["items"] == 6
    assert out["round1_encoded"] == 6 and out["round2_encoded"] == 0
    assert out["labelled_round2"] == 4 and out["round2_s"] > 0
    assert math.isclose(out["encode_ratio"], out["command_encode_s_per_image"] / out["encoder_s_per_image"],
                        rel_tol=0.02)
    assert set(out["round2_timings"]) == {"encode_s", "fit_s", "predict_s", "write_s"}
