"""Organ-free slices of labelled train volumes: one seeded draw, shared by the trained networks (their background
slices) and the spleen genome (its negatives), so both see the same labels."""
from __future__ import annotations

import numpy as np

BACKGROUND_STREAM = 0xB6      # the draw's random stream, apart from the N-label draw's


def background_count(n_labels: int, bg_ratio: float) -> int:
    """How many organ-free slices go with N labelled slices: round(N x bg_ratio)."""
    return int(round(int(n_labels) * float(bg_ratio)))


def background_draw(volumes, k: int, seed: int) -> list[tuple[str, int]]:
    """``k`` seeded organ-free slices (volume id, z) of ``volumes`` (the train volumes the labelled slices come
    from), sorted; candidates are every slice without organ, volumes in id order."""
    vols = sorted(volumes, key=lambda v: v.volume_id)
    cand = [(v.volume_id, int(z)) for v in vols for z in np.flatnonzero(~v.mask.any(axis=(0, 1)))]
    if k <= 0 or not cand:
        return []
    pick = np.random.default_rng([int(seed), BACKGROUND_STREAM]).permutation(len(cand))[:int(k)]
    return [cand[i] for i in sorted(pick)]
