"""README tables are written from results files and bench.json, between markers, never typed."""
import json

import pandas as pd
import pytest

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
    assert rows["GT-box oracle"].iloc[0] == "0.900 [0.90, 0.90]"
    assert rows.iloc[0, -1] == "0.824 / 0.889 / 0.944", "the source study's figures, from report/source_study.yaml"
    # with trained networks at N = 10 only, both are shown at the budget they share
    _save("06_trained_baselines", [{"domain": "kvasir", "source": "real", "unit": "case", "case_id": f"c{i}",
                                    "arch": a, "method": a, "n_labels": 10, "status": "ok", "dice": d}
                                   for i in range(10) for a, d in (("unet_regnetx002", 0.4), ("segformer_b0", 0.3))])
    rows = readme.sample_rows()
    assert rows.N.iloc[0] == 10 and rows["pipeline (labels used)"].iloc[0].startswith("0.590 [")
    assert rows["best trained network at N"].iloc[0] == "0.400 [0.40, 0.40] (unet_regnetx002)"
    text = readme.sample_section()
    assert "| Kvasir-SEG (endoscopy) | real sample | 10 | 10 |" in text and "not resolved" in text


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
