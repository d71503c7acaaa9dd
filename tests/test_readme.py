"""README tables are written from results files and bench.json, between markers, never typed."""
import json

import pandas as pd
import pytest

from frozenseg import evaluation as ev
from frozenseg import readme
from frozenseg.errors import DataError


def _save(nb: str, rows: list[dict]) -> None:
    from frozenseg.results import save_results

    base = {"notebook": nb, "profile": "sample", "model": "litemedsam", "seed": 0, "flag": ""}
    save_results(pd.DataFrame([{**base, **r} for r in rows]), nb, "sample")


def test_sample_table_reads_the_results_and_says_what_the_sample_allows(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    _save("04_kvasir", [{"domain": "kvasir", "source": "real", "unit": "case", "case_id": f"c{i}", "stage": "deployed",
                         "method": f"deployed_n{n}", "n_labels": n, "labels_used": min(n, 12),
                         "dice": 0.5 + 0.02 * i + (0.1 if n == 25 else 0.0)} for n in (10, 25) for i in range(10)])
    _save("01_frozen_oracle", [{"domain": "kvasir", "source": "real", "unit": "case", "case_id": f"c{i}",
                                "method": "gt_box", "dice": 0.9} for i in range(10)])
    rows = readme.sample_rows()
    assert rows.domain.tolist() == ["Kvasir-SEG (endoscopy)"] and rows.data.iloc[0] == "real sample"
    assert rows.N.iloc[0] == 25 and rows["pipeline (labels used)"].iloc[0].startswith("0.690 [")
    assert rows["pipeline (labels used)"].iloc[0].endswith("(12)")
    assert rows["GT-box oracle"].iloc[0] == "0.900 (n = 10, all equal)", "never a zero-width interval"
    assert rows.iloc[0, -1] == "0.824 / 0.889 / 0.944", "the source study's figures, from report/source_study.yaml"
    # with trained networks at N = 10 only, both are shown at the budget they share
    _save("06_trained_baselines", [{"domain": "kvasir", "source": "real", "unit": "case", "case_id": f"c{i}",
                                    "arch": a, "method": a, "n_labels": 10, "status": "ok", "dice": d + 0.01 * i,
                                    "val_dice": v}
                                   for i in range(10) for a, d, v in (("unet_regnetx002", 0.4, 0.7),
                                                                      ("segformer_b0", 0.3, 0.6))])
    rows = readme.sample_rows()
    assert rows.N.iloc[0] == 10 and rows["pipeline (labels used)"].iloc[0].startswith("0.590 [")
    assert rows["best trained network at N"].iloc[0].startswith("0.445 [")
    assert rows["best trained network at N"].iloc[0].endswith("(unet_regnetx002)")
    text = readme.sample_section()
    assert "| Kvasir-SEG (endoscopy) | real sample | 10 | 10 |" in text and "not resolved" in text
    assert ev.interval_note() in text


def _nets(val: bool) -> list[dict]:
    """Two archs: segformer wins on test, unet on validation (a planted test-only winner)."""
    return [{"domain": "kvasir", "source": "real", "unit": "case", "case_id": f"c{i}", "arch": a, "method": a,
             "n_labels": 10, "status": "ok", "dice": d, **({"val_dice": v} if val else {}), "seed": s}
            for s in (0, 1) for i in range(10)
            for a, d, v in (("unet_regnetx002", 0.40, 0.8 - 0.3 * s), ("segformer_b0", 0.90, 0.6))]


def test_best_network_is_chosen_on_validation_dice_never_on_test(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    _save("04_kvasir", [{"domain": "kvasir", "source": "real", "unit": "case", "case_id": f"c{i}", "stage": "deployed",
                         "method": "deployed_n10", "n_labels": 10, "labels_used": 10, "dice": 0.6} for i in range(10)])
    # unet: validation Dice 0.8 (seed 0) and 0.5 (seed 1), mean 0.65 > segformer's 0.6; segformer is far better on test
    _save("06_trained_baselines", _nets(val=True))
    assert readme.best_network(readme.results_if_run("06_trained_baselines", "sample")) == "unet_regnetx002"
    cell = readme.sample_rows()["best trained network at N"].iloc[0]
    assert cell.endswith("(unet_regnetx002)") and cell.startswith("0.400"), "the test-only winner is not chosen"
    _save("06_trained_baselines", _nets(val=False))        # old results without val_dice: no choice at all
    assert readme.sample_rows()["best trained network at N"].iloc[0] == "–"
    assert "no validation Dice" in readme.sample_section()


def test_one_unit_has_no_interval_and_missing_results_still_write(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path / "out"))
    md = tmp_path / "README.md"
    md.write_text("<!-- BEGIN sample -->\n<!-- END sample -->\n<!-- BEGIN speed -->\n<!-- END speed -->\n")
    monkeypatch.setattr(readme.paths, "REPO", tmp_path)
    assert readme.update(md) == ["sample", "speed"] and "No results of the `sample` profile" in md.read_text()
    _save("03_spleen", [{"domain": "spleen", "source": "real", "unit": "volume", "case_id": "v1", "stage": "deployed",
                         "method": "deployed_n50", "n_labels": 50, "labels_used": 50, "dice": 0.204}])
    _save("01_frozen_oracle", [{"domain": "spleen", "source": "real", "unit": u, "case_id": c, "method": "gt_box",
                                "dice": 0.96} for u, c in (("volume", "v1"), ("slice", "v1_z001"))])
    rows = readme.sample_rows()
    assert rows["pipeline (labels used)"].iloc[0] == "0.204 (n = 1, no interval) (50)"
    assert rows["GT-box oracle"].iloc[0] == "0.960 (n = 1, no interval)" and rows["test units"].iloc[0] == 1
    text = readme.sample_section()
    assert "[0.20, 0.20]" not in text and "no interval could be drawn" in text
    readme.update(md)
    assert "| spleen (CT) | real sample | 1 | 50 |" in md.read_text()


def test_update_rewrites_only_between_markers(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path / "none"))
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"commit": "abc1234", "cpus": 2, "encode": {
        "encode_torch_s": 0.9, "encode_openvino_s": 0.6, "encode_speedup": 1.5, "matmul_gflops": 170.0,
        "default_engine": "openvino", "encode_fraction_of_peak": 0.78, "encoder_gflop": 74.9, "repeats": 7}}))
    monkeypatch.setattr(readme.paths, "REPO", tmp_path)
    (tmp_path / "bench").mkdir()
    bench.rename(tmp_path / "bench" / "bench.json")
    md = tmp_path / "README.md"
    md.write_text("intro\n<!-- BEGIN speed -->\nold\n<!-- END speed -->\ntail\n")
    readme.update(md, ["speed"])
    text = md.read_text()
    assert text.startswith("intro\n<!-- BEGIN speed -->\nMeasured by `make bench` at commit abc1234")
    assert "| speed-up (torch / OpenVINO) | 1.50 (target >= 1.3) |" in text and text.endswith("<!-- END speed -->\ntail\n")
    assert "\nold\n" not in text
    md.write_text("no markers here\n")
    with pytest.raises(DataError, match="BEGIN speed"):
        readme.update(md, ["speed"])


def test_speed_table_shows_the_annotate_rounds_with_the_commit_that_measured_them():
    bench = {"commit": "new1234", "annotate": {
        "commit": "old5678", "items": 200, "source": "real sample (Kvasir-SEG, n = 200 images)", "labelled_round1": 10,
        "labelled_round2": 15, "command_encode_s_per_image": 0.31, "encoder_s_per_image": 0.3, "encode_ratio": 1.03,
        "round2_encoded": 0, "routing": "the command's defaults", "round2_s": 259.4,
        "round2_timings": {"fit_s": 196.3, "predict_s": 62.7}}}
    (r1, v1), (r2, v2) = readme.annotate_rows(bench)
    assert "commit old5678" in r1 and "n = 200 images" in r1 and v1.endswith("= 1.03 (target <= 1.25)")
    assert "15 labelled, 0 images encoded" in r2 and v2.startswith("259 s (route choice and fit 196 s, predicting 63 s")
    assert v2.endswith("target <= 30 s)")
    assert readme.annotate_rows({"commit": "x"}) == [], "no annotate part, no rows"


def test_a_bench_part_rerun_keeps_the_other_parts():
    from frozenseg.bench import merge_parts

    old = {"commit": "a", "encode": {"commit": "a", "encode_torch_s": 0.5}, "encode_speedup": 1.4,
           "annotate": {"commit": "a", "round2_s": 300.0}}
    new = {"commit": "b", "annotate": {"commit": "b", "round2_s": 250.0}}
    merged = merge_parts(old, new, ["annotate"])
    assert merged["annotate"]["round2_s"] == 250.0 and merged["commit"] == "b"
    assert merged["encode"] == old["encode"] and merged["encode_speedup"] == 1.4, "the encode part is kept"
    assert merge_parts({"commit": "a", "encode": {"s": 1}}, new, ["annotate"])["encode"] == {"commit": "a", "s": 1}, \
        "a kept part without its own commit is stamped with the file's"
    assert merge_parts(old, {"commit": "c", "encode": {"x": 1}}, ["encode"]) == \
        {"commit": "c", "encode": {"x": 1}, "annotate": old["annotate"]}, "a rerun encode part replaces its summary"


def test_the_cold_build_row_survives_a_later_partial_run(tmp_path, monkeypatch):
    from frozenseg import paths
    from frozenseg.runner import COLD_TIMES

    monkeypatch.setattr(paths, "build_dir", lambda profile: tmp_path / profile)
    (tmp_path / "cpu").mkdir()
    cold = {"all_notebooks": True, "embedding_cache_entries_at_start": 0, "jobs": 1, "commit": "c01d", "total_s": 1800,
            "notebooks": {"06_trained_baselines": 600.0, "00_data": 5.0}}
    partial = {**cold, "all_notebooks": False, "commit": "9a27", "notebooks": {"02_isic": 200.0}}
    (tmp_path / "cpu" / COLD_TIMES).write_text(json.dumps(cold))
    (tmp_path / "cpu" / "run_times.json").write_text(json.dumps(partial))
    (row, value), = readme.report_rows("cpu")
    assert "commit c01d" in row and value == "30.0 min; notebooks over a minute (min): 06_trained_baselines 10.0"
    (tmp_path / "cpu" / COLD_TIMES).unlink()
    assert readme.report_rows("cpu") == [], "a partial run alone gives no cold-build row"


def test_a_row_never_mixes_data_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    _save("05_cxr", [{"domain": "cxr", "source": "real", "unit": "case", "case_id": f"c{i}", "stage": "deployed",
                      "method": "deployed_n10", "n_labels": 10, "labels_used": 10, "dice": 0.9} for i in range(6)])
    _save("01_frozen_oracle", [{"domain": "cxr", "source": "real", "unit": "case", "case_id": f"c{i}",
                                "method": "gt_box", "dice": 0.95} for i in range(6)])
    _save("06_trained_baselines", [{"domain": "cxr", "source": "phantom", "unit": "case", "case_id": f"p{i}",
                                    "arch": "unet_regnetx002", "method": "unet_regnetx002", "n_labels": 10,
                                    "status": "ok", "dice": 0.98, "val_dice": 0.97} for i in range(6)])
    row = readme.sample_rows().iloc[0]
    assert row["best trained network at N"] == readme.OTHER_DATA, "phantom networks beside a real-sample pipeline"
    assert row["GT-box oracle"].startswith("0.950"), "the oracle ran on the same data: shown"
    text = readme.sample_section()
    assert "| – (other data) |" in text and "rerun it on this profile" in text and "nan" not in text
