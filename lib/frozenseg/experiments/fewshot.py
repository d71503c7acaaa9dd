"""Notebook 07's experiment, tables and figure: per domain, seed and N, the decoder tuned on the boxes of each arm
and scored on the fixed test split (``ev.test_units``: 2D images without a target included; spleen: every slice of
each test volume, per 3D volume), the frozen decoder beside it; every prediction scored by ``evaluation`` at native
size. The tuning loop is :mod:`frozenseg.finetune`'s.

Arms, each tuned on the boxes it is prompted with at test time:
- ``gt_box`` (oracle): each image's own ground-truth box; an image without a target (a 2D negative, an organ-free
  CT slice) has none and is predicted empty (``ev.EMPTY_RULE`` then scores it).
- ``localizer`` (GT-free, deployable): the box of the domain's own route localizer (notebooks 02-05), fitted on the
  same N labels; the train images' boxes come from a localizer fitted without them (leave one out).
- ``mean_box`` (GT-free): the static few-shot box, the mean of the N train GT boxes in normalised coordinates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .. import evaluation as ev
from ..boxes import clip_box, mask_to_box
from ..errors import DataError
from ..finetune.tuner import STATUS_FAILED, STATUS_OK, TunedDecoder, tune_decoder

NOTEBOOK = "07_fewshot_decoder"
# Sizes when a profile leaves them open (Profile.fewshot overrides; budgets None = Profile.budgets).
DEFAULTS = {"budgets": None, "epochs": 20, "lr": 1e-4, "batch_size": 2, "val_fraction": 0.2, "patience": 3,
            "n_test": None}
TUNE_KEYS = ("epochs", "lr", "batch_size", "val_fraction", "patience")
GT_FREE_ARMS = ("localizer", "mean_box")
ARM_LABELS = {"gt_box": "GT box (oracle)", "localizer": "domain localizer (GT-free)",
              "mean_box": "mean train box (GT-free)"}


def fewshot_params(profile) -> dict:
    """The profile's few-shot settings over DEFAULTS (budgets default to the profile's N budgets)."""
    params = {**DEFAULTS, **(getattr(profile, "fewshot", None) or {})}
    params["budgets"] = tuple(int(n) for n in (params["budgets"] or profile.budgets))
    return params


def labelled_set(train, n: int, seed: int) -> list:
    """The seeded, nested N-label subset of the train pool (never the test split); empty masks dropped."""
    from ..data.splits import subsample_train

    return [c for c in subsample_train(train, n, seed) if c.mask.any()]


# ---------------------------------------------------------------- box providers


@dataclass
class ArmBoxes:
    """One arm's boxes: ``train`` aligned with the labelled cases (None: no box, left out of tuning), ``test(case)``
    for a test image (None: nothing to prompt, predicted empty), how many labels the frozen arm used, and what
    made the boxes (``localizer`` column of the rows, e.g. the route's localizer)."""

    train: list
    test: Callable
    labels_used: int
    source: str = ""


def gt_box_provider(labelled: Sequence) -> Callable:
    """Oracle arm: every image is prompted with its own ground-truth box; None where the image has no target."""
    return lambda case: mask_to_box(case.mask, case.case_id) if case.mask.any() else None


def static_fewshot_box(labelled: Sequence) -> Callable:
    """GT-free arm: the mean of the N labelled GT boxes in normalised image coordinates, scaled to each image."""
    boxes = [mask_to_box(c.mask, c.case_id) / _wh(c.mask.shape) for c in labelled if c.mask.any()]
    if not boxes:
        raise DataError(None, "no labelled case has a foreground mask", "label at least one image with the target")
    mean = np.mean(boxes, axis=0)
    return lambda case: clip_box(mean * _wh(case.image.shape), case.image.shape)


def _wh(shape) -> np.ndarray:
    """(W, H, W, H) of an image shape, for normalising xyxy boxes."""
    h, w = shape[:2]
    return np.array([w, h, w, h], dtype=np.float64)


def localizer_boxes_2d(study, domain: str, seed: int, n: int, labelled) -> ArmBoxes:
    """The route's localizer of a 2D domain at budget N (genome included; read from its cache when notebooks 02-05
    fitted it); a labelled image that is one of the supports is localized by the route refit without it."""
    from ..pipeline.genome import loo_pipelines
    from .domain import fit_domain

    pipe, rec = fit_domain(study, domain, seed, n_labels=n)
    embs = study.embeddings(labelled, desc=f"{domain} train N={n}")

    def box(p, case, emb):
        return p.localize(p.frame(case.image, emb))[1]

    pipes = loo_pipelines(pipe, labelled, pipe.support, pipe.support_embeddings, strict=False)
    train = [box(p, c, e) for p, c, e in zip(pipes, labelled, embs)]
    how = f", chosen for {domain} by the router ({rec['route_how']})" if rec.get("route_how") else ""
    return ArmBoxes(train, lambda case, emb: box(pipe, case, emb), rec["labels_used"],
                    route_localizer(pipe.route) + how)


def route_localizer(route) -> str:
    """'cpg (features=auto) of route isic': a fitted route's localizer and its fixed parameters."""
    loc = dict(route.localizer)
    name, args = loc.pop("name"), ", ".join(f"{k}={v}" for k, v in sorted(loc.items()))
    return f"{name}{f' ({args})' if args else ''} of route {route.domain}"


def localizer_boxes_volume(study, seed: int, n: int, labelled) -> ArmBoxes:
    """Spleen's localizer at budget N: the volume-prior box of each test slice inside the prior's z-range (None
    outside it: predicted empty); a labelled slice is boxed by the prior of the other train volumes' labels (leave
    one volume out), at its own z even where that prior's z-range would not reach."""
    from ..localizers.base import grow_box
    from ..pipeline.volume import VolumePrior
    from .spleen import fit_volume_pipeline

    vp = fit_volume_pipeline(study, seed, n_labels=n)
    margin, range_margin = float(vp.params["box_margin"]), int(vp.params["range_margin"])
    data = study.data("spleen")
    vols = {**data.train_volumes, **data.volumes}
    bodies = {vid: vp.body(v.image, v.spacing) for vid, v in vols.items()}   # each volume's body frame

    def box(prior, case, gated=True):
        body = bodies[case.volume_id]
        if gated and case.slice_index not in prior.slice_range(body, range_margin):
            return None
        return grow_box(prior.box_at(case.slice_index, body), margin, case.mask.shape)

    ids = set(vp.labels)
    used = [c for c in data.train if c.case_id in ids]
    priors, train = {}, []
    for c in labelled:
        if c.volume_id not in priors:
            rest = [u for u in used if u.volume_id != c.volume_id]
            priors[c.volume_id] = VolumePrior.fit(rest, bodies) if rest else vp.prior
        train.append(box(priors[c.volume_id], c, gated=False))   # the prior's box there, even past its z-range
    return ArmBoxes(train, lambda case, emb: box(vp.prior, case), len(vp.labels),
                    "volume-prior box per slice (frozenseg.pipeline.volume)")


def arm_boxes(study, domain: str, seed: int, n: int, arm: str, labelled) -> ArmBoxes:
    """The boxes of one arm at budget N (see the module docstring)."""
    if arm == "gt_box":
        f = gt_box_provider(labelled)
        return ArmBoxes([f(c) for c in labelled], lambda case, emb: f(case), 0, "ground-truth box")
    if arm == "mean_box":
        f = static_fewshot_box(labelled)
        return ArmBoxes([f(c) for c in labelled], lambda case, emb: f(case), len(labelled), "mean train GT box")
    if arm == "localizer":
        if study.data(domain).volumes:
            if domain != "spleen":
                raise DataError(None, f"{domain}: {skipped_arms(study, domain)['localizer']}", "use a 2D folder")
            return localizer_boxes_volume(study, seed, n, labelled)
        return localizer_boxes_2d(study, domain, seed, n, labelled)
    raise DataError(None, f"unknown few-shot arm {arm!r}", f"choose from {list(ARM_LABELS)}")


def skipped_arms(study, domain: str) -> dict[str, str]:
    """{arm: why} for the arms a domain cannot run: the localizer arm of a 3D domain other than spleen (a user's
    folder of volumes), whose volume pipeline (prior, genome) is spleen's alone."""
    if domain != "spleen" and study.data(domain).volumes:
        return {"localizer": "the localizer arm is skipped: the volume localizer (frozenseg.pipeline.volume) is "
                             "fitted for spleen only, so a folder of 3D volumes has no GT-free localizer to tune on"}
    return {}


def tune_arm(model, labelled, embeddings, boxes, params: dict, seed: int) -> TunedDecoder:
    """Tune one arm: the decoder learns from the boxes it will be prompted with at test time (labelled images
    without a box are left out)."""
    keep = [i for i, b in enumerate(boxes) if b is not None]
    if not keep:
        raise DataError(None, "no labelled image has a box in this arm", "check the arm's localizer on the labels")
    kw = {k: params[k] for k in TUNE_KEYS}
    return tune_decoder(model, [embeddings[i] for i in keep], [labelled[i].mask for i in keep],
                        [boxes[i] for i in keep], seed=seed, **kw)


# ---------------------------------------------------------------- test rows


def _case_row(case, box, mask, pred_iou: float) -> dict:
    """Scores of one test prediction at the case's native size (``ev.score_case``: Dice, IoU, ``negative``), with
    what volume scoring needs."""
    from ..boxes import box_iou

    gt = mask_to_box(case.mask, case.case_id) if case.mask.any() else None
    return {"case_id": case.case_id, "volume_id": case.volume_id, "slice_index": case.slice_index,
            **ev.score_case(mask, case, with_hd95=False),
            "box_iou": box_iou(box, gt) if box is not None and gt is not None else math.nan,
            "pred_iou": float(pred_iou), "flag": "", "_mask": mask}


def predict_rows(model, cases, embeddings, box_of, run: TunedDecoder | None = None, mask_cache=None) -> list[dict]:
    """Test rows of the frozen decoder (``run`` None, via the mask cache) or of a tuned run (NaN rows if it failed).
    ``box_of(case, embedding)`` (or ``box_of(case)``) gives the prompt; None (the GT box of a negative, a slice
    outside the volume prior's range) means an empty mask is predicted there and scored by ``ev.EMPTY_RULE``."""
    import inspect

    from ..cache import MaskCache

    two = len(inspect.signature(box_of).parameters) >= 2
    rows = []
    for case, emb in zip(cases, embeddings):
        if run is not None and not run.ok:
            rows.append({"case_id": case.case_id, "volume_id": case.volume_id, "slice_index": case.slice_index,
                         "dice": math.nan, "iou": math.nan, "negative": not case.mask.any(), "flag": "tuning_failed",
                         "_mask": None})
            continue
        box = box_of(case, emb) if two else box_of(case)
        if box is None:
            rows.append(_case_row(case, None, np.zeros(case.mask.shape, bool), math.nan))
            continue
        if run is None:
            masks, ious = (mask_cache or MaskCache()).decode_boxes(model, case.image, emb, np.asarray(box)[None])
        else:
            pred = run.decode(emb, box)
            masks, ious = pred.masks, pred.iou
        rows.append(_case_row(case, box, masks[0], ious[0]))
    return rows


def run_info(run: TunedDecoder | None) -> dict:
    """Per-run columns repeated on every row of that run (frozen rows: status 'ok' and decoder 'frozen', so that
    ``ev.scored_units`` counts them)."""
    if run is None:
        return {"status": STATUS_OK, "epochs_run": 0, "best_epoch": 0, "tune_s": 0.0, "n_train": 0, "n_val": 0}
    return {"status": run.status, "epochs_run": run.epochs_run, "best_epoch": run.best_epoch,
            "tune_s": round(run.seconds, 2), "n_train": len(run.train_index), "n_val": len(run.val_index)}


def budget_rows(study, domain: str, seed: int, n: int, params: dict, test, test_embs) -> list[dict]:
    """Frozen and tuned rows of every arm for one domain, seed and N (the frozen GT box once, as N = 0).
    ``labels_used``: the tuned decoder sees the N labelled masks; a frozen arm only what its box needs."""
    labelled = labelled_set(study.data(domain).train, n, seed)
    embs = study.embeddings(labelled, desc=f"{domain} train N={n}")
    rows, skip = [], skipped_arms(study, domain)
    for arm in (a for a in ARM_LABELS if a not in skip):
        boxes = arm_boxes(study, domain, seed, n, arm, labelled)
        run = tune_arm(study.model, labelled, embs, boxes.train, params, seed)
        variants = [("tuned", n, run, len(labelled))]
        if arm != "gt_box" or n == min(params["domain_budgets"]):
            variants.append(("frozen", 0 if arm == "gt_box" else n, None, boxes.labels_used))
        for decoder, n_lab, r, used in variants:
            meta = {"arm": arm, "decoder": decoder, "n_labels": n_lab, "labels_used": used, "localizer": boxes.source,
                    "method": method_name(decoder, arm, n_lab), **run_info(r)}
            rows += [{**row, **meta} for row in predict_rows(study.model, test, test_embs, boxes.test, r, study.masks)]
    return rows


def method_name(decoder: str, arm: str, n: int) -> str:
    """Unique method name, e.g. 'tuned_gt_box_n25' or 'frozen_gt_box'."""
    return f"{decoder}_{arm}" + (f"_n{n}" if n else "")


def domain_results(study, domain: str, seed: int, params: dict) -> pd.DataFrame:
    """Every budget of one domain and seed; spleen adds per-volume 3D rows (unit 'volume') over every slice of each
    test volume; its slice rows stay diagnostics."""
    from ..data import budgets_for

    data = study.data(domain)
    test = ev.test_units(data, params["n_test"])
    for arm, why in skipped_arms(study, domain).items():
        print(f"{domain}, seed {seed}: {why}")
    test_embs = study.embeddings(test, desc=f"{domain} test")
    params = {**params, "domain_budgets": budgets_for(data, params["budgets"])}
    rows = [r for n in params["domain_budgets"] for r in budget_rows(study, domain, seed, n, params, test, test_embs)]
    tags = {"domain": domain, "seed": seed, "perturbation": "none", "level": 0.0}
    df = pd.DataFrame(rows).assign(**tags)
    if not data.volumes:
        return df.assign(unit="case")
    vols = volume_scores(df, data.volumes).assign(unit="volume", **tags)
    return pd.concat([df.assign(unit="slice"), vols], ignore_index=True)


def volume_scores(slices: pd.DataFrame, volumes: dict) -> pd.DataFrame:
    """Per-volume 3D rows per method (``ev.volume_rows``: every slice of each volume, slices without a prediction
    empty); a failed run's volumes are NaN with its flag, never scored as empty."""
    meta_cols = ["method", "arm", "decoder", "n_labels", "labels_used", "localizer", "status", "epochs_run",
                 "best_epoch", "tune_s", "n_train", "n_val"]
    meta = slices[[c for c in meta_cols if c in slices]].drop_duplicates("method")
    rows = []
    for method, g in slices[slices.flag == ""].dropna(subset=["volume_id"]).groupby("method", sort=True):
        preds = {vid: {} for vid in g.volume_id}
        for vid, z, m in zip(g.volume_id, g.slice_index, g._mask):
            if isinstance(m, np.ndarray):
                preds[vid][int(z)] = m
        ious = g.groupby("volume_id")[["box_iou", "pred_iou"]].mean()
        rows += [{**r, "method": method, "box_iou": float(ious.box_iou[r["volume_id"]]),
                  "pred_iou": float(ious.pred_iou[r["volume_id"]]), "flag": ""}
                 for r in ev.volume_rows(preds, volumes, with_hd95=False)]
    failed = slices[slices.flag != ""].drop_duplicates(["volume_id", "method"])
    failed = failed.assign(case_id=failed.volume_id, slice_index=np.nan,
                           negative=[not volumes[v].mask.any() for v in failed.volume_id])
    out = pd.concat([pd.DataFrame(rows, columns=["case_id", "volume_id", "method", "flag"] if not rows else None),
                     failed[["case_id", "volume_id", "method", "negative", "flag"]]], ignore_index=True)
    return out.merge(meta, on="method", how="left").assign(flag=lambda d: d.flag.fillna(""))


def run_fewshot(study, notebook: str = NOTEBOOK) -> pd.DataFrame:
    """The whole experiment for every domain and seed of a Study, as one tidy table (masks dropped)."""
    params = fewshot_params(study.profile)
    parts = [domain_results(study, d, seed, params).assign(source=study.source_of(d))
             for d in study.domains for seed in study.seeds]
    out = pd.concat(parts, ignore_index=True).drop(columns=["_mask"], errors="ignore")
    return out.assign(notebook=notebook, profile=study.profile.name, model=study.model_key)


# ---------------------------------------------------------------- tables and the figure


def fewshot_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd (ev.ACROSS_SEEDS) of Dice per domain x arm x decoder x N, scored units of finished runs only."""
    return (ev.seed_summary(ev.scored_units(df), ["domain", "arm", "decoder", "n_labels"])
            .sort_values(["domain", "arm", "decoder", "n_labels"]))


def summarize_fewshot(df: pd.DataFrame, titles: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per domain x arm: frozen and tuned Dice (ev.ACROSS_SEEDS) at each N, and failed runs."""
    curves, rows = fewshot_curves(df), []
    frozen_gt = curves[(curves.arm == "gt_box") & (curves.decoder == "frozen")].set_index("domain")
    for (dom, arm), g in curves[curves.decoder == "tuned"].groupby(["domain", "arm"], sort=False):
        row = {"domain": (titles or {}).get(dom, dom), "arm": ARM_LABELS.get(arm, arm)}
        for n in sorted(g.n_labels.unique()):
            t = g[g.n_labels == n].iloc[0]
            f = frozen_gt.loc[dom] if arm == "gt_box" else curves[(curves.domain == dom) & (curves.arm == arm) &
                                                                  (curves.decoder == "frozen") & (curves.n_labels == n)].iloc[0]
            row[f"N={n} frozen"] = ev.fmt_mean_sd(f["mean"], f["sd"])
            row[f"N={n} tuned"] = ev.fmt_mean_sd(t["mean"], t["sd"])
        row["failed runs"] = int(df[(df.domain == dom) & (df.arm == arm) & (df.status == STATUS_FAILED)]
                                 [["seed", "n_labels"]].drop_duplicates().shape[0])
        rows.append(row)
    return pd.DataFrame(rows)


def localizer_note(df: pd.DataFrame, titles: dict[str, str] | None = None) -> str:
    """Which localizer the GT-free 'localizer' arm ran with per domain, read from the rows (the route it fitted)."""
    d = df[df.arm == "localizer"] if "localizer" in df else df.iloc[:0]
    parts = [f"{(titles or {}).get(dom, dom)}: {', '.join(sorted(set(g.localizer.dropna())))}"
             for dom, g in d.groupby("domain", sort=False)]
    return ("Domain localizer arm, as fitted on the N labels per domain: " + "; ".join(parts) + "."
            if parts else "Domain localizer arm: no rows.")


def runs_table(df: pd.DataFrame, titles: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per tuning run: status, train/val sizes, epochs run, best epoch (0 = untuned kept), seconds."""
    cols = ["domain", "seed", "arm", "n_labels", "labels_used", "status", "n_train", "n_val", "epochs_run",
            "best_epoch", "tune_s"]
    runs = df[df.decoder == "tuned"][cols].drop_duplicates(["domain", "seed", "arm", "n_labels"])
    return runs.assign(domain=runs.domain.map(lambda d: (titles or {}).get(d, d))).reset_index(drop=True)


def fewshot_plot(curves: pd.DataFrame, titles: dict[str, str] | None = None):
    """Dice vs N per domain: tuned (solid) and frozen (dashed) decoders; GT-box arm blue, domain localizer orange,
    mean train box green."""
    from .. import viz

    doms = list(dict.fromkeys(curves.domain))
    fig, axes = viz.domain_panels(doms, height=3.3)
    for ax, dom in zip(axes, doms):
        g = curves[curves.domain == dom]
        ns = sorted(g[g.decoder == "tuned"].n_labels.unique())
        for arm, color in (("gt_box", "C0"), ("localizer", "C1"), ("mean_box", "C2")):
            for dec, ls in (("tuned", "-"), ("frozen", "--")):
                c = g[(g.arm == arm) & (g.decoder == dec)].sort_values("n_labels")
                if dec == "frozen" and arm == "gt_box" and len(c):
                    c = pd.concat([c.iloc[[0]]] * len(ns)).assign(n_labels=ns)
                if c.empty:
                    continue
                ax.errorbar(c.n_labels, c["mean"], yerr=c["sd"].fillna(0), color=color, ls=ls, marker="o", ms=3,
                            capsize=2, label=f"{dec}, {arm.replace('_', ' ')}")
        ax.set_title((titles or {}).get(dom, dom), fontsize=9)
        ax.set_xlabel("labelled images N")
        ax.set_xticks(ns)
        ax.grid(alpha=0.3)
    return viz.finish_dice_panels(fig, axes, "test Dice")
