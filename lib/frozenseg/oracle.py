"""The frozen-oracle experiment: GT box -> frozen decoder, and Dice as the box is jittered or loosened."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from .boxes import box_iou, jitter_box, loosen_box, mask_to_box
from .config import DOMAINS
from .data import test_subset
from .evaluation.metrics import assemble_volume, score, score_volume


def box_variants(gt: np.ndarray, shape, jitter_levels, loosen_levels, rng) -> list[tuple[str, str, float, np.ndarray]]:
    """(method, perturbation, level, box) for the GT box and each jitter / loosen level."""
    out = [("gt_box", "none", 0.0, gt)]
    out += [(f"jitter_{j:g}", "jitter", float(j), jitter_box(gt, j, rng, shape)) for j in jitter_levels if j > 0]
    out += [(f"loosen_{f:g}", "loosen", float(f), loosen_box(gt, f, shape)) for f in loosen_levels if f != 1.0]
    return out


def oracle_cases(model, cases, embeddings, seed: int, domain: str, jitter_levels, loosen_levels,
                 mask_cache=None) -> pd.DataFrame:
    """One row per case x box variant: Dice, IoU, HD95 (GT box only), the box's IoU with the GT box, predicted IoU."""
    from .cache import MaskCache

    mask_cache = mask_cache or MaskCache()
    code = DOMAINS.index(domain) if domain in DOMAINS else sum(map(ord, domain))
    rows = []
    for case, emb in zip(cases, embeddings):
        base = {"domain": domain, "seed": seed, "case_id": case.case_id, "volume_id": case.volume_id,
                "slice_index": case.slice_index}
        if not case.mask.any():
            rows.append({**base, "method": "gt_box", "perturbation": "none", "level": 0.0, "flag": "empty_gt_mask"})
            continue
        rng = np.random.default_rng([seed, code, _stable_int(case.case_id)])
        gt = mask_to_box(case.mask, case.case_id)
        variants = box_variants(gt, case.mask.shape, jitter_levels, loosen_levels, rng)
        masks, ious = mask_cache.decode_boxes(model, case.image, emb, np.stack([v[3] for v in variants]))
        for (method, pert, level, box), m, piou in zip(variants, masks, ious):
            rows.append({**base, "method": method, "perturbation": pert, "level": level,
                         **score(m, case.mask, case.spacing, with_hd95=method == "gt_box"),
                         "box_iou": box_iou(box, gt), "pred_iou": float(piou), "flag": "", "_mask": m})
    return pd.DataFrame(rows)


def volume_rows(slice_rows: pd.DataFrame, volumes: dict) -> pd.DataFrame:
    """Per-volume 3D scores from per-slice predictions (slices without a prediction, e.g. the oracle's organ-free
    slices, which have no GT box, count as empty)."""
    rows = []
    for (vid, method), g in slice_rows.dropna(subset=["volume_id"]).groupby(["volume_id", "method"], sort=True):
        vol = volumes[vid]
        pred = assemble_volume(vol.mask.shape, {int(z): m for z, m in zip(g.slice_index, g._mask)
                                                if isinstance(m, np.ndarray)})
        first = g.iloc[0]
        rows.append({"domain": first.domain, "seed": first.seed, "case_id": vid, "volume_id": vid,
                     "method": method, "perturbation": first.perturbation, "level": first.level,
                     **score_volume(pred, vol.mask, vol.spacing, with_hd95=method == "gt_box"),
                     "box_iou": float(g.box_iou.mean()), "pred_iou": float(g.pred_iou.mean()), "flag": ""})
    return pd.DataFrame(rows)


def _stable_int(text: str) -> int:
    """A process-independent integer from a string (Python's hash() is salted)."""
    return zlib.crc32(text.encode())


def run_oracle(study, notebook: str = "01_frozen_oracle") -> pd.DataFrame:
    """The whole experiment for every domain and seed of a Study, as one tidy table (masks dropped)."""
    prof, parts = study.profile, []
    for domain in study.domains:
        data = study.data(domain)
        test = test_subset(data)
        embs = study.embeddings(test, desc=f"{domain} test")
        for seed in study.seeds:
            df = oracle_cases(study.model, test, embs, seed, domain, prof.jitter_levels, prof.loosen_levels,
                              study.masks)
            if data.volumes:
                df = pd.concat([df.assign(unit="slice"), volume_rows(df, data.volumes).assign(unit="volume")])
            else:
                df = df.assign(unit="case")
            parts.append(df.assign(source=study.source_of(domain)))
    out = pd.concat(parts, ignore_index=True).drop(columns=["_mask"], errors="ignore")
    return out.assign(notebook=notebook, profile=prof.name, model=study.model_key)


def scored_units(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that count in tables: 2D cases and whole volumes (spleen slices are diagnostics only) with a finite Dice.
    A flag (a localizer's fallback, no trajectory fit) is a diagnostic: the unit still counts with its prediction;
    only a unit without one (a failed run, NaN Dice) is left out."""
    return df[df.unit.isin(["case", "volume"]) & np.isfinite(df.dice.astype(float))]


def summarize_oracle(df: pd.DataFrame, titles: dict[str, str] | None = None) -> pd.DataFrame:
    """Per domain: GT-box Dice (mean ± sd over seeds), median Dice, median HD95 (mm for volumes, else pixels),
    and Dice with the loosest and the most-jittered boxes."""
    from .results import fmt_mean_sd, seed_summary

    d = scored_units(df)
    gt = d[d.method == "gt_box"]
    s = seed_summary(gt, ["domain", "unit"]).set_index("domain")
    loose_m = d[d.perturbation == "loosen"].level.max()
    jit_m = d[d.perturbation == "jitter"].level.max()
    rows = []
    for dom in dict.fromkeys(d.domain):
        g = gt[gt.domain == dom]
        row = {"domain": (titles or {}).get(dom, dom), "unit": s.loc[dom, "unit"], "n": int(s.loc[dom, "cases"]),
               "GT-box Dice": fmt_mean_sd(s.loc[dom, "mean"], s.loc[dom, "sd"]),
               "median Dice": f"{g.dice.median():.3f}", "median HD95": f"{g.hd95.median():.1f}"}
        for pert, lvl, label in (("loosen", loose_m, f"Dice, box x{loose_m:g}"),
                                 ("jitter", jit_m, f"Dice, jitter {jit_m:g}")):
            if pd.notna(lvl):
                q = seed_summary(d[(d.domain == dom) & (d.perturbation == pert) & (d.level == lvl)], ["domain"])
                row[label] = fmt_mean_sd(q["mean"].iloc[0], q["sd"].iloc[0]) if len(q) else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def sensitivity_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd (over seeds) of Dice per domain x perturbation x level, with the GT box at both curves' origin."""
    from .results import seed_summary

    d = scored_units(df)
    s = seed_summary(d, ["domain", "perturbation", "level"])
    origin = s[s.perturbation == "none"]
    s = pd.concat([s[s.perturbation != "none"],
                   origin.assign(perturbation="jitter", level=0.0), origin.assign(perturbation="loosen", level=1.0)])
    return s.rename(columns={"level": "x"}).sort_values(["domain", "perturbation", "x"]).reset_index(drop=True)
