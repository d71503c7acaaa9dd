"""The frozen-oracle experiment: GT box -> frozen decoder, and Dice as the box is jittered or loosened.

A test unit without a target (a negative) has no GT box: every box arm predicts an empty mask there, which the
empty-mask rule (:data:`frozenseg.evaluation.EMPTY_RULE`) scores; it is never dropped. Scores come from the
evaluation core at the ground truth's native resolution (2D) or per whole volume in 3D.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from .. import evaluation as ev
from ..boxes import box_iou, jitter_box, loosen_box, mask_to_box
from ..config import DOMAINS


def box_variants(gt: np.ndarray, shape, jitter_levels, loosen_levels, rng) -> list[tuple[str, str, float, np.ndarray]]:
    """(method, perturbation, level, box) for the GT box and each jitter / loosen level."""
    out = [("gt_box", "none", 0.0, gt)]
    out += [(f"jitter_{j:g}", "jitter", float(j), jitter_box(gt, j, rng, shape)) for j in jitter_levels if j > 0]
    out += [(f"loosen_{f:g}", "loosen", float(f), loosen_box(gt, f, shape)) for f in loosen_levels if f != 1.0]
    return out


def _arms(jitter_levels, loosen_levels) -> list[tuple[str, str, float]]:
    """(method, perturbation, level) of every box arm, as box_variants names them."""
    return ([("gt_box", "none", 0.0)] + [(f"jitter_{j:g}", "jitter", float(j)) for j in jitter_levels if j > 0]
            + [(f"loosen_{f:g}", "loosen", float(f)) for f in loosen_levels if f != 1.0])


def oracle_cases(model, cases, embeddings, seed: int, domain: str, jitter_levels, loosen_levels,
                 mask_cache=None, volumes: dict | None = None) -> pd.DataFrame:
    """One row per case x box arm: Dice, IoU, HD95 (GT box only), ``negative``, the box's IoU with the GT box and the
    predicted IoU; a case without a target gets an empty mask from every arm (no box). Slices of ``volumes`` are
    diagnostic rows (unit 'slice', no HD95); 2D cases are units ('case'), scored at native resolution. ``_mask``
    keeps each prediction for per-volume scoring."""
    from ..cache import MaskCache

    mask_cache = mask_cache or MaskCache()
    code = DOMAINS.index(domain) if domain in DOMAINS else sum(map(ord, domain))
    rows = []
    for case, emb in zip(cases, embeddings):
        is_slice = bool(volumes) and case.volume_id in volumes
        base = {"domain": domain, "seed": seed, "case_id": case.case_id, "volume_id": case.volume_id,
                "slice_index": case.slice_index, "unit": "slice" if is_slice else "case", "flag": ""}
        if not case.mask.any():           # no target, no GT box: every arm predicts nothing
            empty = np.zeros(case.mask.shape, bool)
            preds = [(arm, empty, np.nan, np.nan) for arm in _arms(jitter_levels, loosen_levels)]
        else:
            rng = np.random.default_rng([seed, code, _stable_int(case.case_id)])
            gt = mask_to_box(case.mask, case.case_id)
            variants = box_variants(gt, case.mask.shape, jitter_levels, loosen_levels, rng)
            masks, ious = mask_cache.decode_boxes(model, case.image, emb, np.stack([v[3] for v in variants]))
            preds = [(v[:3], m, box_iou(v[3], gt), float(piou)) for v, m, piou in zip(variants, masks, ious)]
        for (method, pert, level), m, biou, piou in preds:
            rows.append({**base, "method": method, "perturbation": pert, "level": level,
                         **ev.score_case(m, case, with_hd95=method == "gt_box" and not is_slice),
                         "box_iou": biou, "pred_iou": piou, "_mask": m})
    return pd.DataFrame(rows)


def volume_rows(slice_rows: pd.DataFrame, volumes: dict) -> pd.DataFrame:
    """Per-volume 3D scores (``ev.volume_rows``) of each box arm from its per-slice predictions; every slice of a
    test volume was predicted (organ-free ones: empty, no GT box)."""
    rows = []
    for method, g in slice_rows.dropna(subset=["volume_id"]).groupby("method", sort=True):
        preds = {}
        for vid, z, m in zip(g.volume_id, g.slice_index, g._mask):
            preds.setdefault(vid, {})[int(z)] = m
        first = g.iloc[0]
        stats = g.groupby("volume_id")[["box_iou", "pred_iou"]].mean()
        for r in ev.volume_rows(preds, volumes, with_hd95=method == "gt_box"):
            rows.append({"domain": first.domain, "seed": first.seed, "method": method,
                         "perturbation": first.perturbation, "level": first.level, **r,
                         "box_iou": float(stats.loc[r["volume_id"], "box_iou"]),
                         "pred_iou": float(stats.loc[r["volume_id"], "pred_iou"]), "flag": ""})
    return pd.DataFrame(rows)


def _stable_int(text: str) -> int:
    """A process-independent integer from a string (Python's hash() is salted)."""
    return zlib.crc32(text.encode())


def run_oracle(study, notebook: str = "01_frozen_oracle") -> pd.DataFrame:
    """The whole experiment for every domain and seed of a Study, on each domain's test units (``ev.test_units``:
    negatives kept, volumes whole), as one tidy table (masks dropped)."""
    prof, parts = study.profile, []
    for domain in study.domains:
        data = study.data(domain)
        test = ev.test_units(data)
        embs = study.embeddings(test, desc=f"{domain} test")
        for seed in study.seeds:
            df = oracle_cases(study.model, test, embs, seed, domain, prof.jitter_levels, prof.loosen_levels,
                              study.masks, volumes=data.volumes)
            if data.volumes:
                df = pd.concat([df, volume_rows(df, data.volumes)], ignore_index=True)
            parts.append(df.assign(source=study.source_of(domain)))
    out = pd.concat(parts, ignore_index=True).drop(columns=["_mask", "index"], errors="ignore")
    return out.assign(notebook=notebook, profile=prof.name, model=study.model_key)


def summarize_oracle(df: pd.DataFrame, titles: dict[str, str] | None = None) -> pd.DataFrame:
    """Per domain: test units and negatives, GT-box Dice (``ev.ACROSS_SEEDS``), median Dice, median HD95 with the
    units that had no boundary (mm for volumes and files with a spacing, else native pixels), and Dice with the
    loosest and the most-jittered boxes."""
    d = ev.scored_units(df)
    gt = d[d.method == "gt_box"]
    s = ev.seed_summary(gt, ["domain", "unit"]).set_index("domain")
    loose_m = d[d.perturbation == "loosen"].level.max()
    jit_m = d[d.perturbation == "jitter"].level.max()
    rows = []
    for dom in dict.fromkeys(d.domain):
        g = gt[gt.domain == dom]
        first = g[g.seed == g.seed.min()]
        row = {"domain": (titles or {}).get(dom, dom), "unit": s.loc[dom, "unit"], "n": int(s.loc[dom, "units"]),
               "negatives": int(first.negative.sum()) if "negative" in first else 0,
               "GT-box Dice": ev.fmt_mean_sd(s.loc[dom, "mean"], s.loc[dom, "sd"]),
               "median Dice": f"{g.dice.median():.3f}",
               "median HD95": ev.hd95_summary(g.hd95, ev.hd95_unit(g))}
        for pert, lvl, label in (("loosen", loose_m, f"Dice, box x{loose_m:g}"),
                                 ("jitter", jit_m, f"Dice, jitter {jit_m:g}")):
            if pd.notna(lvl):
                row[label] = ev.seed_cell(d[(d.domain == dom) & (d.perturbation == pert) & (d.level == lvl)])
        rows.append(row)
    return pd.DataFrame(rows)


def sensitivity_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd across seeds (``ev.seed_summary``) of Dice per domain x perturbation x level, with the GT box at
    both curves' origin."""
    d = ev.scored_units(df)
    s = ev.seed_summary(d, ["domain", "perturbation", "level"])
    origin = s[s.perturbation == "none"]
    s = pd.concat([s[s.perturbation != "none"],
                   origin.assign(perturbation="jitter", level=0.0), origin.assign(perturbation="loosen", level=1.0)])
    return s.rename(columns={"level": "x"}).sort_values(["domain", "perturbation", "x"]).reset_index(drop=True)
