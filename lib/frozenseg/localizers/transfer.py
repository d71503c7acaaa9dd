"""Label transfer for the CPG localizer: support masks carried to a query's feature cells.

Two rules: per-support top-k (each support scores a query cell by its k best foreground matches, minus its k best
background matches; supports averaged) and pooled k-nearest-neighbour transfer (each query cell takes the
similarity-weighted vote of its k nearest cells among every support's cells at once, so one support that holds the
right appearance is not outvoted by nine that do not). Also the prior's candidate peaks (several regions as
prompts) and a horizontal-flip average of any prior function.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..boxes import clip_box


def topk_mean(corr: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k largest values of each row of (Nq, Ns) (k clipped to Ns; an empty support gives zeros)."""
    if corr.shape[1] == 0:
        return np.zeros(corr.shape[0], np.float32)
    k = max(1, min(int(k), corr.shape[1]))
    return np.partition(corr, corr.shape[1] - k, axis=1)[:, -k:].mean(1)


def transfer_prior(query: np.ndarray, supports: list, k: int, contrast: bool) -> np.ndarray:
    """(Nq,) prior: per support, top-k foreground correlation (minus top-k background), averaged over supports."""
    out = np.zeros(query.shape[0], np.float64)
    for fg, bg in supports:
        p = topk_mean(query @ fg.T, k)
        if contrast:
            p = p - topk_mean(query @ bg.T, k)
        out += p
    return (out / len(supports)).astype(np.float32)


def pooled_cells(supports: list) -> tuple[np.ndarray, np.ndarray]:
    """(cells, labels) of every support's foreground (1) and background (0) cells, stacked."""
    cells = np.concatenate([np.concatenate([fg, bg]) for fg, bg in supports]).astype(np.float32)
    labels = np.concatenate([np.r_[np.ones(len(fg)), np.zeros(len(bg))] for fg, bg in supports]).astype(np.float32)
    return cells, labels


def knn_prior(query: np.ndarray, cells: np.ndarray, labels: np.ndarray, k: int, temperature: float = 0.05,
              chunk: int = 2048) -> np.ndarray:
    """(Nq,) foreground vote of each query row's k nearest (cosine) pooled support cells, softmax-weighted by
    similarity at ``temperature``; in [0, 1]."""
    k = max(1, min(int(k), len(cells)))
    out = np.empty(len(query), np.float32)
    for s in range(0, len(query), chunk):
        sim = query[s:s + chunk] @ cells.T
        idx = np.argpartition(sim, sim.shape[1] - k, axis=1)[:, -k:]
        top = np.take_along_axis(sim, idx, 1)
        w = np.exp((top - top.max(1, keepdims=True)) / max(float(temperature), 1e-6))
        out[s:s + chunk] = (w * labels[idx]).sum(1) / w.sum(1)
    return out


def flip_averaged(prior_fn, image: np.ndarray, *args) -> np.ndarray:
    """Mean of ``prior_fn(image, *args)`` and the mirrored ``prior_fn(mirrored image, *args)`` (args given for the
    mirror are taken as they are: pass the mirrored image's own embedding)."""
    return 0.5 * (prior_fn(image, args[0] if args else None)
                  + prior_fn(image[:, ::-1].copy(), args[1] if len(args) > 1 else None)[:, ::-1])


def prior_peaks(prior: np.ndarray, threshold: float, n: int) -> list[tuple[np.ndarray, tuple[int, int], float]]:
    """Up to ``n`` candidate regions of a prior: its connected components above ``threshold`` (each containing a
    local peak), best peak first; each as (box xyxy, peak yx, peak value)."""
    lab, k = ndimage.label(prior >= threshold)
    if k == 0:
        return []
    idx = np.arange(1, k + 1)
    peaks = ndimage.maximum_position(prior, lab, idx)
    values = ndimage.maximum(prior, lab, idx)
    slices = ndimage.find_objects(lab)
    out = []
    for i in np.argsort(-np.asarray(values), kind="stable")[: max(1, int(n))]:
        sy, sx = slices[i]
        box = clip_box(np.array([sx.start, sy.start, sx.stop - 1, sy.stop - 1], float), prior.shape)
        out.append((box, tuple(int(v) for v in peaks[i]), float(values[i])))
    return out
