"""Few-shot decoder tuning: a copy of the mask decoder trained on cached embeddings; both encoders stay frozen."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .boxes import clip_box, mask_to_box
from .errors import ConfigError, DataError, FrozenSegError
from .models.base import Embedding, Prediction, PromptableModel, state_dict_hash

STATUS_OK, STATUS_FAILED = "ok", "failed"


class TuningFailedError(FrozenSegError):
    """A tuning run diverged (non-finite loss) and has no decoder to predict with."""


@dataclass
class TunedDecoder:
    """A tuned copy of the mask decoder, the frozen model it plugs into, and how the run went."""

    model: PromptableModel             # the frozen model with this decoder swapped in (a shallow view)
    decoder: torch.nn.Module
    status: str                        # STATUS_OK or STATUS_FAILED
    history: list[dict] = field(default_factory=list)   # per epoch: train_loss, val_loss, val_dice
    best_epoch: int = 0                # 0 = the untuned decoder was best on validation
    train_index: list[int] = field(default_factory=list)
    val_index: list[int] = field(default_factory=list)
    seconds: float = 0.0
    message: str = ""

    @property
    def ok(self) -> bool:
        """True unless the run diverged."""
        return self.status == STATUS_OK

    @property
    def epochs_run(self) -> int:
        """Epochs actually trained (early stopping or failure may cut the run short)."""
        return sum(1 for h in self.history if h["epoch"] > 0)

    def decode(self, emb: Embedding, boxes) -> Prediction:
        """Decode xyxy boxes (original pixels) with the tuned decoder and the frozen prompt encoder."""
        if not self.ok:
            raise TuningFailedError(f"this tuning run failed ({self.message}); its decoder cannot be used")
        return self.model.decode(emb, boxes=boxes)


# ---------------------------------------------------------------- pieces


def decoder_view(model: PromptableModel, decoder: torch.nn.Module, tag: str = "tuned") -> PromptableModel:
    """A shallow copy of ``model`` sharing its frozen encoders, with ``decoder`` swapped in and its own cache id."""
    view = copy.copy(model)
    view.mask_decoder = decoder
    view.weights_id = f"{tag}-{state_dict_hash(decoder)}"
    return view


def trainable_copy(decoder: torch.nn.Module) -> torch.nn.Module:
    """Deep copy of a (frozen) decoder with gradients switched on; the original is untouched."""
    dec = copy.deepcopy(decoder).train()
    for p in dec.parameters():
        p.requires_grad_(True)
    return dec


def validation_split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, val) index lists of the N labels: at least one of each when n >= 2, no val when n < 2."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    k = 0 if n < 2 or val_fraction == 0 else min(n - 1, max(1, int(round(n * val_fraction))))
    perm = np.random.default_rng([int(seed), 0x7A1D]).permutation(n)
    return sorted(int(i) for i in perm[k:]), sorted(int(i) for i in perm[:k])


def frame_targets(model: PromptableModel, masks, embeddings, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GT masks mapped into the model's low-res frame (resize + pad) and the valid (unpadded) region, (N, S, S)."""
    from .concept.core import DecoderBackend

    backend = DecoderBackend(model)
    pairs = [backend.target(m, e, side) for m, e in zip(masks, embeddings)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]).float()


@torch.no_grad()
def prompt_tensors(model: PromptableModel, embeddings, boxes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (N,C,h,w), sparse (N,k,C), dense (N,C,h,w)) from the frozen prompt encoder, computed once."""
    sp, de = zip(*(model.prompt_embeddings(e, boxes=np.asarray(b, dtype=np.float64)) for e, b in zip(embeddings, boxes)))
    imgs = torch.cat([e.tensor() for e in embeddings]).to(model.device)
    return imgs, torch.cat(sp), torch.cat(de)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Soft Dice + BCE over the valid (unpadded) pixels, mean over the batch."""
    from .concept.core import dice_loss

    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid
    bce = bce.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    return (bce + dice_loss(logits, target, valid)).mean()


def hard_dice(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of ``logits > 0`` against ``target > 0.5`` on the valid region, (B,)."""
    p, t = (logits > 0).float() * valid, (target > 0.5).float() * valid
    s = p.flatten(1).sum(1) + t.flatten(1).sum(1)
    return torch.where(s > 0, 2 * (p * t).flatten(1).sum(1) / s.clamp(min=1), torch.ones_like(s))


def _logits(view: PromptableModel, batch: dict, idx) -> torch.Tensor:
    """Low-res logits (B, S, S) of the view's decoder on the samples ``idx``.

    SAM-style decoders run as one paired batch through ``PreparedDecoder(trainable=True)`` (same arithmetic,
    gradients to every decoder weight); others through the model's own ``decode_tensors``.
    """
    from .models.fast_decoder import PreparedDecoder, supports

    if supports(view):
        dec = PreparedDecoder(view, images=batch["img"][idx], dense=batch["dense"][idx], trainable=True)
        return dec(batch["sparse"][idx])
    return view.decode_tensors(batch["img"][idx], batch["sparse"][idx], batch["dense"][idx])[0][:, 0]


@torch.no_grad()
def _evaluate(view: PromptableModel, batch: dict, idx: list[int]) -> tuple[float, float]:
    """(mean loss, mean hard Dice) on the samples ``idx`` (no gradient)."""
    if not idx:
        return math.nan, math.nan
    lo = _logits(view, batch, idx)
    t, v = batch["target"][idx], batch["valid"][idx]
    return float(segmentation_loss(lo, t, v)), float(hard_dice(lo, t, v).mean())


def _check_inputs(embeddings, masks, boxes) -> None:
    """Raise on mismatched lengths, an empty set or an empty mask."""
    if not (len(embeddings) == len(masks) == len(boxes)):
        raise ConfigError(f"{len(embeddings)} embeddings, {len(masks)} masks and {len(boxes)} boxes: pass one of each per image")
    if len(masks) == 0:
        raise DataError(None, "no labelled images to tune on", "pass at least one (embedding, mask, box) triple")
    for i, m in enumerate(masks):
        if not np.asarray(m).any():
            raise DataError(None, f"labelled mask {i} is empty", "drop images without the target before tuning")


# ---------------------------------------------------------------- the tuner


def tune_decoder(model: PromptableModel, embeddings: Sequence[Embedding], masks, boxes, *, epochs: int = 20,
                 lr: float = 1e-4, batch_size: int = 2, val_fraction: float = 0.2, patience: int = 3, seed: int = 0,
                 weight_decay: float = 1e-4, clip: float = 1.0) -> TunedDecoder:
    """Tune a copy of ``model``'s mask decoder on labelled (embedding, mask, box) triples; early stop on a val split."""
    _check_inputs(embeddings, masks, boxes)
    if epochs < 0 or batch_size < 1 or patience < 1:
        raise ConfigError(f"need epochs >= 0, batch_size >= 1 and patience >= 1 (got {epochs}, {batch_size}, {patience})")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    decoder = trainable_copy(model.mask_decoder)
    view = decoder_view(model, decoder)
    img, sparse, dense = prompt_tensors(model, embeddings, boxes)
    side = int(_logits(view, {"img": img, "sparse": sparse, "dense": dense}, [0]).shape[-1])
    target, valid = frame_targets(model, masks, embeddings, side)
    batch = {"img": img, "sparse": sparse, "dense": dense, "target": target.to(img.device), "valid": valid.to(img.device)}
    tr, va = validation_split(len(masks), val_fraction, seed)
    run = TunedDecoder(model=view, decoder=decoder, status=STATUS_OK, train_index=tr, val_index=va)
    _fit(run, batch, epochs=epochs, lr=lr, batch_size=batch_size, patience=patience, seed=seed,
         weight_decay=weight_decay, clip=clip)
    decoder.eval().requires_grad_(False)
    run.model = decoder_view(model, decoder)
    run.seconds = time.perf_counter() - t0
    return run


def _fit(run: TunedDecoder, batch: dict, *, epochs, lr, batch_size, patience, seed, weight_decay, clip) -> None:
    """AdamW epochs over the train indices; keep the weights with the lowest val loss (epoch 0 = untuned)."""
    dec, view, tr, va = run.decoder, run.model, run.train_index, run.val_index
    opt = torch.optim.AdamW(dec.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    val_loss, val_dice = _evaluate(view, batch, va)
    run.history.append({"epoch": 0, "train_loss": math.nan, "val_loss": val_loss, "val_dice": val_dice})
    best, best_state, bad = val_loss, copy.deepcopy(dec.state_dict()), 0
    for epoch in range(1, epochs + 1):
        order = [tr[int(i)] for i in torch.randperm(len(tr), generator=gen)]
        losses = []
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            loss = segmentation_loss(_logits(view, batch, idx), batch["target"][idx], batch["valid"][idx])
            if not torch.isfinite(loss):
                return _fail(run, epoch, f"non-finite training loss at epoch {epoch}, step {s // batch_size + 1}")
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(dec.parameters(), clip)
            opt.step()
            losses.append(float(loss.detach()))
        val_loss, val_dice = _evaluate(view, batch, va)
        run.history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss, "val_dice": val_dice})
        if va and not math.isfinite(val_loss):
            return _fail(run, epoch, f"non-finite validation loss at epoch {epoch}")
        if not va or val_loss < best:
            best, best_state, bad, run.best_epoch = val_loss, copy.deepcopy(dec.state_dict()), 0, epoch
        else:
            bad += 1
            if bad >= patience:
                break
    dec.load_state_dict(best_state)


def _fail(run: TunedDecoder, epoch: int, message: str) -> None:
    """Mark a run as failed (diverged); its decoder must not be used."""
    run.status, run.message = STATUS_FAILED, message
    run.history.append({"epoch": epoch, "train_loss": math.nan, "val_loss": math.nan, "val_dice": math.nan})


# ---------------------------------------------------------------- box providers


BoxProvider = Callable[[Sequence], Callable]   # labelled cases -> (case -> xyxy box in original pixels)


def gt_box_provider(labelled: Sequence) -> Callable:
    """Oracle arm: every image is prompted with its own ground-truth box (``labelled`` is unused)."""
    return lambda case: mask_to_box(case.mask, case.case_id)


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


# ---------------------------------------------------------------- the experiment of notebook 07

NOTEBOOK = "07_fewshot_decoder"
ARMS: dict[str, BoxProvider] = {"gt_box": gt_box_provider, "deployable": static_fewshot_box}
# Sizes when a profile leaves them open (Profile.fewshot overrides; budgets None = Profile.budgets).
DEFAULTS = {"budgets": None, "epochs": 20, "lr": 1e-4, "batch_size": 2, "val_fraction": 0.2, "patience": 3,
            "n_test": None}
TUNE_KEYS = ("epochs", "lr", "batch_size", "val_fraction", "patience")


def fewshot_params(profile) -> dict:
    """The profile's few-shot settings over DEFAULTS (budgets default to the profile's N budgets)."""
    params = {**DEFAULTS, **(getattr(profile, "fewshot", None) or {})}
    params["budgets"] = tuple(int(n) for n in (params["budgets"] or profile.budgets))
    return params


def labelled_set(train, n: int, seed: int) -> list:
    """The seeded, nested N-label subset of the train pool (never the test split); empty masks dropped."""
    from .data.splits import subsample_train

    return [c for c in subsample_train(train, n, seed) if c.mask.any()]


def tune_arm(model, labelled, embeddings, provider: BoxProvider, params: dict, seed: int) -> TunedDecoder:
    """Tune one arm: the decoder learns from the boxes it will be prompted with at test time."""
    box_of = provider(labelled)
    kw = {k: params[k] for k in TUNE_KEYS}
    return tune_decoder(model, embeddings, [c.mask for c in labelled], [box_of(c) for c in labelled], seed=seed, **kw)


def _case_row(case, box, mask, pred_iou: float) -> dict:
    """Scores of one test prediction, with what volume scoring needs."""
    from .boxes import box_iou
    from .metrics import dice, iou

    gt = mask_to_box(case.mask, case.case_id)
    return {"case_id": case.case_id, "volume_id": case.volume_id, "slice_index": case.slice_index,
            "dice": dice(mask, case.mask), "iou": iou(mask, case.mask), "box_iou": box_iou(box, gt),
            "pred_iou": float(pred_iou), "flag": "", "_mask": mask}


def predict_rows(model, cases, embeddings, box_of, run: TunedDecoder | None = None, mask_cache=None) -> list[dict]:
    """Test rows of the frozen decoder (``run`` None, via the mask cache) or of a tuned run (NaN rows if it failed)."""
    from .cache import MaskCache

    rows = []
    for case, emb in zip(cases, embeddings):
        box = box_of(case)
        if run is not None and not run.ok:
            rows.append({"case_id": case.case_id, "volume_id": case.volume_id, "slice_index": case.slice_index,
                         "dice": math.nan, "iou": math.nan, "flag": "tuning_failed", "_mask": None})
            continue
        if run is None:
            masks, ious = (mask_cache or MaskCache()).decode_boxes(model, case.image, emb, box[None])
        else:
            pred = run.decode(emb, box)
            masks, ious = pred.masks, pred.iou
        rows.append(_case_row(case, box, masks[0], ious[0]))
    return rows


def run_info(run: TunedDecoder | None) -> dict:
    """Per-run columns repeated on every row of that run (frozen rows: status 'frozen')."""
    if run is None:
        return {"status": "frozen", "epochs_run": 0, "best_epoch": 0, "tune_s": 0.0, "n_train": 0, "n_val": 0}
    return {"status": run.status, "epochs_run": run.epochs_run, "best_epoch": run.best_epoch,
            "tune_s": round(run.seconds, 2), "n_train": len(run.train_index), "n_val": len(run.val_index)}


def budget_rows(study, domain: str, seed: int, n: int, params: dict, test, test_embs) -> list[dict]:
    """Frozen and tuned rows of both arms for one domain, seed and N (frozen GT box: once, as N = 0)."""
    labelled = labelled_set(study.data(domain).train, n, seed)
    embs = study.embeddings(labelled, desc=f"{domain} train N={n}")
    rows = []
    for arm, provider in ARMS.items():
        box_of = provider(labelled)
        run = tune_arm(study.model, labelled, embs, provider, params, seed)
        variants = [("tuned", n, run)]
        if arm != "gt_box" or n == min(params["budgets"]):
            variants.append(("frozen", 0 if arm == "gt_box" else n, None))
        for decoder, n_lab, r in variants:
            meta = {"arm": arm, "decoder": decoder, "n_labels": n_lab, "method": _method(decoder, arm, n_lab), **run_info(r)}
            rows += [{**row, **meta} for row in predict_rows(study.model, test, test_embs, box_of, r, study.masks)]
    return rows


def _method(decoder: str, arm: str, n: int) -> str:
    """Unique method name, e.g. 'tuned_gt_box_n25' or 'frozen_gt_box'."""
    return f"{decoder}_{arm}" + (f"_n{n}" if n else "")


def domain_results(study, domain: str, seed: int, params: dict) -> pd.DataFrame:
    """Every budget of one domain and seed; spleen adds per-volume 3D rows (unit 'volume'), slices stay diagnostics."""
    from .concept.experiment import test_subset

    data = study.data(domain)
    test = test_subset(data, params["n_test"])
    test = [c for c in test if c.mask.any()]
    test_embs = study.embeddings(test, desc=f"{domain} test")
    rows = [r for n in params["budgets"] for r in budget_rows(study, domain, seed, n, params, test, test_embs)]
    tags = {"domain": domain, "seed": seed, "perturbation": "none", "level": 0.0}
    df = pd.DataFrame(rows).assign(**tags)
    if not data.volumes:
        return df.assign(unit="case")
    vols = volume_scores(df, data.volumes).assign(unit="volume", **tags)
    return pd.concat([df.assign(unit="slice"), vols], ignore_index=True)


def volume_scores(slices: pd.DataFrame, volumes: dict) -> pd.DataFrame:
    """Per-volume 3D rows per method; a failed run's volumes are NaN with its flag, never scored as empty."""
    from .oracle import volume_rows

    meta_cols = ["method", "arm", "decoder", "n_labels", "status", "epochs_run", "best_epoch", "tune_s", "n_train", "n_val"]
    meta = slices[meta_cols].drop_duplicates("method")
    ok = slices[slices.flag == ""]
    vol = volume_rows(ok, volumes) if len(ok) else pd.DataFrame(columns=["volume_id", "method"])
    failed = slices[slices.flag != ""].drop_duplicates(["volume_id", "method"])
    failed = failed.assign(case_id=failed.volume_id, slice_index=np.nan)[["case_id", "volume_id", "method", "flag"]]
    out = pd.concat([vol.drop(columns=["domain", "seed", "perturbation", "level"], errors="ignore"), failed],
                    ignore_index=True)
    return out.merge(meta, on="method", how="left").assign(flag=lambda d: d.flag.fillna(""))


def run_fewshot(study, notebook: str = NOTEBOOK) -> pd.DataFrame:
    """The whole experiment for every domain and seed of a Study, as one tidy table (masks dropped)."""
    params = fewshot_params(study.profile)
    parts = [domain_results(study, d, seed, params).assign(source=study.source_of(d))
             for d in study.domains for seed in study.seeds]
    out = pd.concat(parts, ignore_index=True).drop(columns=["_mask"], errors="ignore")
    return out.assign(notebook=notebook, profile=study.profile.name, model=study.model_key)


# ---------------------------------------------------------------- summaries


def fewshot_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd (across seeds) of Dice per domain x arm x decoder x N, scored units of finished runs only."""
    from .oracle import scored_units
    from .results import seed_summary

    d = scored_units(df)
    return seed_summary(d, ["domain", "arm", "decoder", "n_labels"]).sort_values(["domain", "arm", "decoder", "n_labels"])


def summarize_fewshot(df: pd.DataFrame, titles: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per domain x arm: frozen and tuned Dice (mean ± sd across seeds) at each N, and failed runs."""
    from .results import fmt_mean_sd

    curves, rows = fewshot_curves(df), []
    frozen_gt = curves[(curves.arm == "gt_box") & (curves.decoder == "frozen")].set_index("domain")
    for (dom, arm), g in curves[curves.decoder == "tuned"].groupby(["domain", "arm"], sort=False):
        row = {"domain": (titles or {}).get(dom, dom), "arm": arm}
        for n in sorted(g.n_labels.unique()):
            t = g[g.n_labels == n].iloc[0]
            f = frozen_gt.loc[dom] if arm == "gt_box" else curves[(curves.domain == dom) & (curves.arm == arm) &
                                                                  (curves.decoder == "frozen") & (curves.n_labels == n)].iloc[0]
            row[f"N={n} frozen"] = fmt_mean_sd(f["mean"], f["sd"])
            row[f"N={n} tuned"] = fmt_mean_sd(t["mean"], t["sd"])
        row["failed runs"] = int(df[(df.domain == dom) & (df.arm == arm) & (df.status == STATUS_FAILED)]
                                 [["seed", "n_labels"]].drop_duplicates().shape[0])
        rows.append(row)
    return pd.DataFrame(rows)


def runs_table(df: pd.DataFrame, titles: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per tuning run: status, train/val sizes, epochs run, best epoch (0 = untuned kept), seconds."""
    cols = ["domain", "seed", "arm", "n_labels", "status", "n_train", "n_val", "epochs_run", "best_epoch", "tune_s"]
    runs = df[df.decoder == "tuned"][cols].drop_duplicates(["domain", "seed", "arm", "n_labels"])
    return runs.assign(domain=runs.domain.map(lambda d: (titles or {}).get(d, d))).reset_index(drop=True)


def fewshot_plot(curves: pd.DataFrame, titles: dict[str, str] | None = None):
    """Dice vs N per domain: tuned (solid) and frozen (dashed) decoders, GT-box arm blue, deployable orange."""
    import matplotlib.pyplot as plt

    doms = list(dict.fromkeys(curves.domain))
    fig, axes = plt.subplots(1, len(doms), figsize=(3.4 * len(doms), 3.3), squeeze=False, sharey=True)
    for ax, dom in zip(axes[0], doms):
        g = curves[curves.domain == dom]
        ns = sorted(g[g.decoder == "tuned"].n_labels.unique())
        for arm, color in (("gt_box", "C0"), ("deployable", "C1")):
            for dec, ls in (("tuned", "-"), ("frozen", "--")):
                c = g[(g.arm == arm) & (g.decoder == dec)].sort_values("n_labels")
                if dec == "frozen" and arm == "gt_box" and len(c):
                    c = pd.concat([c.iloc[[0]]] * len(ns)).assign(n_labels=ns)
                ax.errorbar(c.n_labels, c["mean"], yerr=c["sd"].fillna(0), color=color, ls=ls, marker="o", ms=3,
                            capsize=2, label=f"{dec}, {arm.replace('_', ' ')}")
        ax.set_title((titles or {}).get(dom, dom), fontsize=9)
        ax.set_xlabel("labelled images N")
        ax.set_xticks(ns)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test Dice")
    axes[0, 0].set_ylim(0, 1)
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
