"""The machine's float32 matmul speed now: the reference every bench part records beside its timings."""
from __future__ import annotations

import time

import numpy as np


def machine_gflops(seconds: float = 1.0) -> float:
    """This machine's float32 matmul speed now, GFLOP/s: the median of batched products shaped like the concept
    decoder's (5 images x 72 query rows x 4096 image tokens x 256 channels) on the current torch threads.

    A reference for reading timings: a shared machine's speed drifts from hour to hour, so a timed part records the
    speed it ran at.
    """
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 72, 4096, generator=g), torch.randn(5, 4096, 256, generator=g)
    flop = 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    a @ b                                                         # warm-up
    times, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < 5:
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return round(flop / float(np.median(times)) / 1e9, 1)
