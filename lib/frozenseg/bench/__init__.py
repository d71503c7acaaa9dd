"""Benchmarks: the encoder under PyTorch and OpenVINO against the machine's matmul speed, encoder and decoder
latency, cold vs warm report time, the training-free pipeline, concept fit and loop, few-shot decoder tuning,
two rounds of the annotate command on 200 images, peak memory -> bench/bench.json (``--parts`` picks some; the
parts not run this time are kept from the file, each part stamped with the commit that measured it).

    python -m frozenseg.bench --profile cpu      # what `make bench` runs (cold build: minutes)
    python -m frozenseg.bench --profile smoke    # a quick check of the harness

Targets (issue 2): a warm rebuild with a full cache at least 10x faster than cold; the cpu-profile cold
build of the data and oracle sections under 10 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import paths
from ..io import write_json_atomic
from .speed import machine_gflops  # noqa: F401  (public: bench.machine_gflops)

TARGETS = {"warm_speedup_min": 10.0, "cold_build_max_s": 600.0}


def _peak_rss_mib() -> dict[str, float]:
    """Peak resident memory of this process and of its finished children (the notebook kernels), MiB."""
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"self_mib": round(self_kib / 1024, 1), "children_mib": round(child_kib / 1024, 1)}


def bench_model(profile: str, n_images: int = 6) -> dict:
    """Encoder images/s (uncached) and prompt+decoder latency per box on phantom images of the profile."""
    from ..config import get_profile
    from ..data.phantoms import make_phantom_case
    from ..models import load_model, set_threads

    threads = set_threads()
    prof = get_profile(profile)
    model = load_model(prof.model)
    images = [make_phantom_case("isic", 10_000 + i, prof.phantom_size, prof.data_seed).image for i in range(n_images)]
    model.encode(images[0])                                      # warm-up (allocations, kernels)
    t0 = time.perf_counter()
    embs = [model.encode(im) for im in images]
    enc_s = time.perf_counter() - t0
    box = np.array([40.0, 40.0, prof.phantom_size - 40.0, prof.phantom_size - 40.0])
    model.decode(embs[0], boxes=box)
    t0 = time.perf_counter()
    for e in embs:
        model.decode(e, boxes=box)
    dec_s = (time.perf_counter() - t0) / len(embs)
    return {"model": prof.model, "threads": threads, "image_side": prof.phantom_size, "n_images": n_images,
            "encoder_images_per_s": round(n_images / enc_s, 3), "encoder_s_per_image": round(enc_s / n_images, 3),
            "decoder_ms_per_box": round(1000 * dec_s, 1)}


def bench_report(profile: str, seeds=(0,), notebooks=None) -> dict:
    """Cold build (empty cache and outputs) then warm rebuild (full cache, every notebook re-executed)."""
    from ..runner import run_all

    with tempfile.TemporaryDirectory(prefix="frozenseg-bench-") as tmp:
        os.environ["FROZENSEG_OUT"] = str(Path(tmp) / "out")
        os.environ["FROZENSEG_CACHE"] = str(Path(tmp) / "cache")
        t0 = time.perf_counter()
        run_all(profile, list(seeds), notebooks, force=True)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_all(profile, list(seeds), notebooks, force=True)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_all(profile, list(seeds), notebooks, force=False)
        noop = time.perf_counter() - t0
        cache_mib = sum(p.stat().st_size for p in (Path(tmp) / "cache").rglob("*") if p.is_file()) / 2**20
    return {"profile": profile, "seeds": list(seeds), "cold_build_s": round(cold, 1), "warm_build_s": round(warm, 1),
            "up_to_date_build_s": round(noop, 1), "warm_speedup": round(cold / warm, 2),
            "cache_mib": round(cache_mib, 1)}


PARTS = ("encode", "model", "report", "pipeline", "concept", "finetune", "annotate")
ENCODE_KEYS = ("encode_torch_s", "encode_openvino_s", "encode_speedup", "encode_fraction_of_peak")
FOUNDATION_NOTEBOOKS = ["00_data", "01_frozen_oracle"]


def merge_parts(previous: dict, result: dict, parts) -> dict:
    """bench.json after a run of ``parts``: the run's record, plus every other part (and, when ``encode`` was not
    run, its top-level summary keys) kept from the previous file, so one part's rerun loses no other part."""
    kept = {k: ({"commit": previous.get("commit"), **v} if isinstance(v, dict) else v)   # who measured a kept part
            for k, v in previous.items() if k in PARTS and k not in parts}
    if "encode" not in parts:
        kept.update({k: previous[k] for k in ENCODE_KEYS if k in previous})
    return {**result, **kept}


def _previous(path: Path) -> dict:
    """The existing bench.json, or {} (with a message) when it is missing or unreadable."""
    import json

    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        print(f"{path}: unreadable ({e}); its parts are not kept, this run's record replaces it", flush=True)
        return {}


def main(argv=None) -> dict:
    """Run the chosen benchmarks and write bench/bench.json."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--out", default=str(paths.REPO / "bench" / "bench.json"))
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="which benchmarks to run")
    ap.add_argument("--domains", nargs="+", default=None,
                    help="domains of the concept and finetune parts (default: all four)")
    ap.add_argument("--notebooks", nargs="*", default=FOUNDATION_NOTEBOOKS,
                    help="notebooks of the cold/warm build (default: the data and oracle sections)")
    a = ap.parse_args(argv)
    from .. import __version__
    from .annotate import ANNOTATE_TARGETS, bench_annotate
    from .concept import CONCEPT_TARGETS, bench_concept, bench_finetune
    from .encode import ENCODE_TARGETS, bench_encode
    from .pipeline import PIPELINE_TARGETS, bench_pipeline
    from ..repro import git_commit

    result = {"frozenseg": __version__, "commit": git_commit(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "profile": a.profile, "machine_gflops_at_start": machine_gflops()}
    if "encode" in a.parts:
        enc = bench_encode(a.profile)
        result.update({k: enc[k] for k in ENCODE_KEYS if k in enc}, encode=enc)
        print({k: v for k, v in enc.items() if k != "per_repeat_s"}, flush=True)
    if "model" in a.parts:
        result["model"] = bench_model(a.profile)
        print(result["model"], flush=True)
    if "report" in a.parts:
        rep = bench_report(a.profile, notebooks=a.notebooks or None)
        rep["notebooks"] = a.notebooks or "all"
        rep["meets_warm_speedup"] = rep["warm_speedup"] >= TARGETS["warm_speedup_min"]
        rep["meets_cold_build"] = rep["cold_build_s"] <= TARGETS["cold_build_max_s"]
        result["report"] = rep
        print(rep, flush=True)
    if "pipeline" in a.parts:
        result["pipeline"] = bench_pipeline(a.profile)
        print(result["pipeline"], flush=True)
    if "concept" in a.parts:
        result["concept"] = bench_concept(a.profile, domains=a.domains)
        print(result["concept"], flush=True)
    if "finetune" in a.parts:
        result["finetune"] = bench_finetune(a.profile, domains=a.domains)
        print(result["finetune"], flush=True)
    if "annotate" in a.parts:
        result["annotate"] = bench_annotate(a.profile)
        print(result["annotate"], flush=True)
    for part in a.parts:
        if isinstance(result.get(part), dict):
            result[part]["commit"] = result["commit"]
    result["peak_memory"] = _peak_rss_mib()
    result["targets"] = {**TARGETS, **ENCODE_TARGETS, **CONCEPT_TARGETS, **PIPELINE_TARGETS, **ANNOTATE_TARGETS}
    result = merge_parts(_previous(Path(a.out)), result, a.parts)
    write_json_atomic(a.out, result)
    print(f"wrote {a.out}")
    return result
