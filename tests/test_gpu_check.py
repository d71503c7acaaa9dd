"""`make gpu-check`: the refusal without a GPU, and the comparison and JSON logic with both devices on the CPU."""
import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from frozenseg.bench import gpu_check

REPO = Path(__file__).resolve().parents[1]


class NoCuda:
    """A torch.cuda stand-in that sees no GPU."""

    @staticmethod
    def is_available():
        return False


def test_refuses_without_gpu_and_says_what_to_do(tmp_path):
    out = tmp_path / "gpu_check.json"
    with pytest.raises(gpu_check.NoGpuError) as err:
        gpu_check.run_check(out, rehearse=lambda dev: pytest.fail("rehearsal ran without a GPU"), cuda=NoCuda())
    msg = str(err.value)
    assert "no GPU is visible" in msg and "nvidia-smi" in msg and "make rehearsal" in msg
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here: the refusal cannot be seen")
def test_command_exits_non_zero_without_gpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    proc = subprocess.run([sys.executable, "-m", "frozenseg.bench.gpu_check", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == gpu_check.EXIT_NO_GPU, proc.stderr
    assert "no GPU is visible" in proc.stderr and "nothing was checked" in proc.stderr
    assert not out.exists()


@pytest.fixture
def torch_encoder(monkeypatch):
    monkeypatch.setenv("FROZENSEG_ENCODER", "torch")      # no OpenVINO export in a test


@pytest.fixture(scope="module")
def lite():
    return gpu_check._litemedsam()


def test_check_on_cpu_writes_json(tmp_path, torch_encoder, lite):
    calls = []

    def rehearse(device):
        calls.append(device)
        return {"ran": True, "device": device, "returncode": 0, "wall_s": 1.0, "run_times": {"notebooks": {}}}

    out = tmp_path / "gpu_check.json"
    res = gpu_check.run_check(out, devices={"gpu": "cpu", "cpu": "cpu"}, rehearse=rehearse, n_images=2, repeats=1,
                              load=lambda: lite)
    assert calls == ["cpu"]
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(res))
    enc = data["encoder"]
    assert data["ok"] and not data["problems"] and enc["within_tolerance"]
    assert enc["max_rel_diff"] == 0.0 and enc["mask_dice_min"] == 1.0     # one engine twice: the same numbers
    assert enc["s_per_image_gpu"] > 0 and enc["s_per_image_cpu"] > 0 and enc["images"] == 2
    assert len(enc["per_image_rel_diff"]) == 2
    assert enc["tolerance_rel"] == gpu_check.EMBED_REL_TOL and enc["tolerance_reason"]
    assert data["rehearsal"]["device"] == "cpu"


def test_check_fails_on_a_different_encoder_or_a_failed_rehearsal(tmp_path, torch_encoder, lite):
    perturbed = copy.deepcopy(lite)
    with torch.no_grad():
        for p in perturbed.image_encoder.parameters():
            p.mul_(1.05)
    models = iter([perturbed, lite])                          # the 'gpu' side first, then the 'cpu' side
    out = tmp_path / "gpu_check.json"
    res = gpu_check.run_check(out, devices={"gpu": "cpu", "cpu": "cpu"}, n_images=1, repeats=1,
                              rehearse=lambda dev: {"ran": True, "returncode": 3, "command": "frozenseg.rehearsal"},
                              load=lambda: next(models))
    assert not res["ok"] and not res["encoder"]["within_tolerance"]
    assert res["encoder"]["max_rel_diff"] > gpu_check.EMBED_REL_TOL
    assert any("rehearsal" in p for p in res["problems"]) and any("tolerance" in p for p in res["problems"])
    assert json.loads(out.read_text())["ok"] is False


def test_rehearsal_is_called_through_its_entry_point(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, env, cwd, timeout):
        seen.update(cmd=cmd, device=env["FROZENSEG_DEVICE"])
        f = tmp_path / "report" / "build" / "rehearsal" / "run_times.json"
        f.parent.mkdir(parents=True)
        f.write_text(json.dumps({"profile": "rehearsal", "notebooks": {"00_data": 1.5}}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(gpu_check.subprocess, "run", fake_run)
    res = gpu_check.run_rehearsal("cuda", str(tmp_path))
    assert seen["cmd"][1:] == ["-m", "frozenseg.rehearsal", "--device", "cuda", "--out", str(tmp_path)]
    assert seen["device"] == "cuda"
    assert res["returncode"] == 0 and res["run_times"]["notebooks"] == {"00_data": 1.5}


def test_phantom_images_cover_the_domains():
    images, masks = gpu_check.phantom_images(4, side=64)
    assert len(images) == 4 and all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in images)
    assert all(m.shape == (64, 64) for m in masks)


def test_readme_documents_every_key_of_the_json(tmp_path, torch_encoder, lite):
    res = gpu_check.run_check(tmp_path / "g.json", devices={"gpu": "cpu", "cpu": "cpu"}, n_images=1, repeats=1,
                              rehearse=lambda dev: {
                                  "ran": True, "command": "c", "device": dev, "returncode": 0, "wall_s": 1.0,
                                  "run_times_path": None, "run_times": None}, load=lambda: lite)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("**On a GPU: `make gpu-check`.**")[1].split("\n\n**")[0]
    documented = set(re.findall(r"`(?:encoder\.)?(\w+)`", section))
    keys = set(res) | set(res["encoder"]) | set(res["rehearsal"])
    assert keys <= documented, f"README's gpu-check section does not name {sorted(keys - documented)}"
