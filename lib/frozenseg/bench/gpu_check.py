"""``make gpu-check``: the rehearsal on the GPU, then LiteMedSAM's encoder on the GPU against the CPU (embeddings
within a stated tolerance, seconds per image on both) -> bench/gpu_check.json.

    python -m frozenseg.bench.gpu_check                  # what `make gpu-check` runs
    python -m frozenseg.bench.gpu_check --no-rehearsal   # the encoder comparison alone

No GPU visible: it refuses with exit code 2 and says what to do; it never skips silently. Everything it needs is
local (the venv of `make setup`, LiteMedSAM's bundled weights, phantom images): no network.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .. import paths
from ..io import write_json_atomic

# Largest |GPU - CPU| on an embedding, relative to the largest |CPU| value of that embedding. Why this size: on the
# GPU the study runs PyTorch's defaults, under which cuDNN convolutions may use TF32 (a 10-bit mantissa, so each
# product is rounded to about 5e-4 of its size) and reductions run in another order than on the CPU; through the
# encoder's layers, each renormalised by a LayerNorm, that stays of the order of 1e-3 of the embedding's scale. The
# tolerance leaves ten times that room. A defect (other weights, other preprocessing, an input on another scale)
# moves the embedding by its own size, a relative difference near 1.
EMBED_REL_TOL = 1e-2
TOLERANCE_REASON = ("max |gpu - cpu| / max |cpu| per embedding; TF32 convolutions (PyTorch's default on a GPU) round "
                    "each product to about 5e-4 of its size, which stays near 1e-3 of the embedding's scale through "
                    "the encoder's normalised layers: ten times that room; a defect moves it near 1")
OUT = paths.REPO / "bench" / "gpu_check.json"
EXIT_NO_GPU, EXIT_FAILED = 2, 1
DOMAINS = ("isic", "kvasir", "cxr")        # the 2D phantom domains


class NoGpuError(RuntimeError):
    """No GPU is visible to PyTorch: the check cannot run."""


def require_gpu(cuda=None) -> str:
    """Name of the visible GPU; NoGpuError saying why there is none and what to do otherwise."""
    import torch

    cuda = torch.cuda if cuda is None else cuda
    if cuda.is_available():
        return cuda.get_device_name(0)
    built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    raise NoGpuError(
        f"make gpu-check: no GPU is visible to PyTorch (torch {torch.__version__}, {built}"
        f"{'' if visible is None else f'; CUDA_VISIBLE_DEVICES={visible!r}'}), so nothing was checked and "
        f"{OUT.relative_to(paths.REPO)} was not written. Run it on a machine with an NVIDIA GPU that `nvidia-smi` "
        "lists; with a CPU-only torch, install the CUDA build of the torch version pinned in pyproject.toml into "
        ".venv; check that CUDA_VISIBLE_DEVICES does not hide the GPU. Without a GPU, `make rehearsal` runs the same "
        "rehearsal on the CPU.")


def phantom_images(n: int, side: int = 256, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` phantom images and their masks, the 2D domains in turn (no data root needed)."""
    from ..data.phantoms import make_phantom_case

    cases = [make_phantom_case(DOMAINS[i % len(DOMAINS)], 20_000 + i, side, seed) for i in range(n)]
    return [c.image for c in cases], [c.mask for c in cases]


def _litemedsam():
    """A fresh LiteMedSAM (its own modules, so the two devices never share one moved model)."""
    from ..models.litemedsam import LiteMedSAM

    return LiteMedSAM.from_package()


def encode_on(device: str, images, repeats: int, load: Callable = _litemedsam) -> dict:
    """Embeddings of ``images`` on ``device`` and the median seconds per image over ``repeats`` passes (after one
    warm-up encode); the time is what the study pays per image: preprocessing, transfer, encoder, copy back."""
    import torch

    if torch.device(device).type == "cuda":
        from ..repro import set_cuda_determinism

        set_cuda_determinism()                       # as every study's setup does on a GPU
    model = load().to(device)
    model.encode(images[0])
    times, embs = [], []
    for r in range(repeats):
        for im in images:
            t0 = time.perf_counter()
            emb = model.encode(im)                   # ends with .cpu(): the GPU has finished when it returns
            times.append(time.perf_counter() - t0)
            if r == 0:
                embs.append(emb)
    return {"device": device, "engine": model.encoder_engine, "model": model, "embeddings": embs,
            "s_per_image": float(np.median(times)), "times_s": times}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks (1 when both are empty)."""
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * np.logical_and(a, b).sum() / s)


def _box(mask: np.ndarray, side: int) -> np.ndarray:
    """The mask's bounding box, or the whole image when it is empty."""
    ys, xs = np.nonzero(mask)
    return (np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float) if len(xs)
            else np.array([0, 0, side, side], float))


def compare_encoders(images, masks, devices: dict[str, str] | None = None, repeats: int = 3,
                     load: Callable = _litemedsam, tol: float = EMBED_REL_TOL) -> dict:
    """Encode ``images`` on ``devices['gpu']`` and ``devices['cpu']`` (injectable: both 'cpu' exercises the logic
    without a GPU); compare the embeddings and decode both with the CPU model's decoder from each mask's box."""
    devices = devices or {"gpu": "cuda", "cpu": "cpu"}
    gpu = encode_on(devices["gpu"], images, repeats, load)
    cpu = encode_on(devices["cpu"], images, repeats, load)
    abs_d, rel_d, mean_d, dice = [], [], [], []
    for eg, ec, m in zip(gpu["embeddings"], cpu["embeddings"], masks):
        diff = np.abs(eg.features - ec.features)
        abs_d.append(float(diff.max()))
        rel_d.append(float(diff.max() / max(np.abs(ec.features).max(), 1e-12)))
        mean_d.append(float(diff.mean()))
        box = _box(m, m.shape[1])
        dice.append(_dice(cpu["model"].decode(eg, boxes=box).masks[0], cpu["model"].decode(ec, boxes=box).masks[0]))
    worst = max(rel_d)
    return {"model": "litemedsam", "images": len(images), "image_side": int(images[0].shape[0]), "repeats": repeats,
            "devices": dict(devices), "cpu_engine": cpu["engine"], "gpu_engine": gpu["engine"],
            "s_per_image_gpu": round(gpu["s_per_image"], 5), "s_per_image_cpu": round(cpu["s_per_image"], 5),
            "speedup_gpu_over_cpu": round(cpu["s_per_image"] / max(gpu["s_per_image"], 1e-9), 2),
            "max_abs_diff": max(abs_d), "max_rel_diff": worst, "mean_abs_diff": float(np.mean(mean_d)),
            "per_image_rel_diff": rel_d, "tolerance_rel": tol, "tolerance_reason": TOLERANCE_REASON,
            "within_tolerance": bool(worst <= tol), "mask_dice_min": min(dice), "mask_dice_mean": float(np.mean(dice))}


def run_rehearsal(device: str = "cuda", out: str | None = None, timeout_s: int | None = None) -> dict:
    """``python -m frozenseg.rehearsal --device DEVICE [--out OUT]`` with FROZENSEG_DEVICE=DEVICE; its exit code,
    wall time and the runner's per-notebook times (run_times.json under its output) when it wrote them."""
    import json

    cmd = [sys.executable, "-m", "frozenseg.rehearsal", "--device", device] + (["--out", out] if out else [])
    env = {**os.environ, "FROZENSEG_DEVICE": device}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=paths.REPO, timeout=timeout_s)
    wall = time.perf_counter() - t0
    candidates = Path(out).glob("**/run_times.json") if out else [paths.build_dir("rehearsal") / "run_times.json"]
    found = [p for p in candidates if p.is_file() and p.stat().st_mtime >= time.time() - wall - 1]   # this run's
    run_times = json.loads(found[0].read_text()) if found and proc.returncode == 0 else None
    return {"ran": True, "command": " ".join(cmd[1:]), "device": device, "returncode": proc.returncode,
            "wall_s": round(wall, 1), "run_times_path": str(found[0]) if found else None, "run_times": run_times}


def run_check(out: Path = OUT, devices: dict[str, str] | None = None, rehearse: Callable | None = run_rehearsal,
              n_images: int = 8, repeats: int = 3, load: Callable = _litemedsam, cuda=None) -> dict:
    """The whole check: refuse without a GPU (unless ``devices`` puts the 'gpu' role elsewhere), the rehearsal on
    that device, the encoder comparison; writes ``out`` and returns it (``ok`` False names each problem)."""
    import torch

    from .. import __version__
    from ..repro import git_commit

    devices = devices or {"gpu": "cuda", "cpu": "cpu"}
    gpu_name = require_gpu(cuda) if torch.device(devices["gpu"]).type == "cuda" else f"none ({devices['gpu']})"
    result = {"frozenseg": __version__, "commit": git_commit(), "machine": platform.machine(), "cpus": os.cpu_count(),
              "torch": torch.__version__, "cuda": torch.version.cuda, "gpu": gpu_name,
              "tf32": {"cudnn": bool(torch.backends.cudnn.allow_tf32),
                       "matmul": bool(torch.backends.cuda.matmul.allow_tf32)}}
    problems = []
    if rehearse is not None:
        reh = rehearse(devices["gpu"])
        result["rehearsal"] = reh
        if reh.get("returncode"):
            problems.append(f"the rehearsal on {devices['gpu']} failed (exit {reh['returncode']}): "
                            f"rerun `python -m {reh.get('command', 'frozenseg.rehearsal')}` to see its log")
    else:
        result["rehearsal"] = {"ran": False}
    images, masks = phantom_images(n_images)
    enc = compare_encoders(images, masks, devices, repeats, load)
    result["encoder"] = enc
    if not enc["within_tolerance"]:
        problems.append(f"LiteMedSAM's embeddings differ by {enc['max_rel_diff']:.2e} of their scale between "
                        f"{devices['gpu']} and {devices['cpu']}, beyond the tolerance {enc['tolerance_rel']:g}")
    result.update(ok=not problems, problems=problems)
    write_json_atomic(out, result)
    return result


def main(argv=None) -> int:
    """Command-line entry point; exit 0 passed, 1 a check failed, 2 no GPU."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(OUT), help="the JSON written (default bench/gpu_check.json)")
    ap.add_argument("--rehearsal-out", default=None, help="--out of the rehearsal (default: its own)")
    ap.add_argument("--no-rehearsal", action="store_true", help="the encoder comparison alone")
    ap.add_argument("--images", type=int, default=8, help="phantom images encoded on each device")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the images")
    a = ap.parse_args(argv)
    rehearse = None if a.no_rehearsal else (lambda dev: run_rehearsal(dev, a.rehearsal_out))
    try:
        res = run_check(Path(a.out), rehearse=rehearse, n_images=a.images, repeats=a.repeats)
    except NoGpuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_GPU
    enc = res["encoder"]
    print(f"GPU {res['gpu']}: encoder {enc['s_per_image_gpu']:.4f} s/image on the GPU, {enc['s_per_image_cpu']:.4f} "
          f"s/image on the CPU ({enc['cpu_engine']}); embeddings differ by at most {enc['max_rel_diff']:.2e} of "
          f"their scale (tolerance {enc['tolerance_rel']:g}); decoded masks Dice >= {enc['mask_dice_min']:.4f}")
    print(("passed" if res["ok"] else "FAILED: " + "; ".join(res["problems"])) + f"; wrote {a.out}")
    return 0 if res["ok"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
