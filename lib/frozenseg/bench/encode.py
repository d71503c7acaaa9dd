"""Benchmark part ``encode``: the frozen encoder under eager PyTorch and OpenVINO, side by side with the machine's
float32 matmul speed, all interleaved in one run so that a slow hour slows every one of them alike."""
from __future__ import annotations

import time

import numpy as np

ENCODE_TARGETS = {"encode_fraction_of_peak_min": 0.75, "encode_speedup_min": 1.3}
MATMUL_SIDE = 2048


def encoder_gflop(model) -> float:
    """GFLOP of one encoder pass on a (1, 3, S, S) input, counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, model.input_frame, model.input_frame)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.image_encoder(x)
    return fc.get_total_flops() / 1e9


def bench_encode(profile: str = "cpu", repeats: int = 7) -> dict:
    """Median seconds per image of the encoder under each engine and of a 2048x2048 float32 product, interleaved
    (torch, OpenVINO, matmul per repeat, after a warm-up of each); the ratios are the targets."""
    import torch

    from ..config import get_profile
    from ..data.phantoms import make_phantom_case
    from ..models import load_model, set_threads
    from ..models.engine import planned_engine

    threads = set_threads()
    prof = get_profile(profile)
    model = load_model(prof.model)
    default = planned_engine(model.device)
    images = [make_phantom_case("isic", 10_000 + i, prof.phantom_size, prof.data_seed).image for i in range(repeats)]
    xs = [model.preprocess(im)[0] for im in images]
    engines = {}
    for name in ("torch", "openvino"):
        if model.select_encoder(name) == name:
            engines[name] = model.encoder()
    model.select_encoder()                                   # leave the default engine in place
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(MATMUL_SIDE, MATMUL_SIDE, generator=g), torch.randn(MATMUL_SIDE, MATMUL_SIDE, generator=g)
    times = {name: [] for name in engines} | {"matmul": []}
    with torch.no_grad():
        for enc in engines.values():
            enc(xs[0])                                       # warm-up: allocations, kernel selection
        a @ b
        for x in xs:
            for name, enc in engines.items():
                t0 = time.perf_counter()
                enc(x)
                times[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            a @ b
            times["matmul"].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    gflop = encoder_gflop(model)
    peak = 2 * MATMUL_SIDE ** 3 / med["matmul"] / 1e9
    default_s = med.get(default, med["torch"])
    out = {"model": prof.model, "threads": threads, "image_side": model.input_frame, "repeats": repeats,
           "default_engine": default if default in engines else "torch", "encoder_gflop": round(gflop, 2),
           "matmul_gflops": round(peak, 1), "encode_torch_s": round(med["torch"], 4),
           "encode_fraction_of_peak": round(gflop / default_s / peak, 3),
           "encode_torch_fraction_of_peak": round(gflop / med["torch"] / peak, 3),
           "per_repeat_s": {k: [round(t, 4) for t in v] for k, v in times.items()}}
    if "openvino" in med:
        out.update(encode_openvino_s=round(med["openvino"], 4),
                   encode_speedup=round(med["torch"] / med["openvino"], 3))
    out["meets_fraction_of_peak"] = out["encode_fraction_of_peak"] >= ENCODE_TARGETS["encode_fraction_of_peak_min"]
    out["meets_speedup"] = out.get("encode_speedup", 0.0) >= ENCODE_TARGETS["encode_speedup_min"]
    return out
