"""The tuner: a copy of the mask decoder trained on cached embeddings (both encoders frozen), early stopping on a
validation split of the labels, failed runs marked."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError, FrozenSegError
from ..models.base import Embedding, Prediction, PromptableModel, state_dict_hash
from ..models.fast_decoder import PreparedDecoder, supports
from ..training import dice_bce_loss, frame_targets, hard_dice, validation_split

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


@torch.no_grad()
def prompt_tensors(model: PromptableModel, embeddings, boxes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (N,C,h,w), sparse (N,k,C), dense (N,C,h,w)) from the frozen prompt encoder, computed once."""
    sp, de = zip(*(model.prompt_embeddings(e, boxes=np.asarray(b, dtype=np.float64)) for e, b in zip(embeddings, boxes)))
    imgs = torch.cat([e.tensor() for e in embeddings]).to(model.device)
    return imgs, torch.cat(sp), torch.cat(de)


def decoder_logits(view: PromptableModel, batch: dict, idx) -> torch.Tensor:
    """Low-res logits (B, S, S) of the view's decoder on the samples ``idx`` of a prompt batch (:func:`prompt_tensors`)."""
    # SAM-style decoders run as one paired batch through PreparedDecoder(trainable=True) (same arithmetic, gradients
    # to every decoder weight); others through the model's own decode_tensors.
    if supports(view):
        dec = PreparedDecoder(view, images=batch["img"][idx], dense=batch["dense"][idx], trainable=True)
        return dec(batch["sparse"][idx])
    return view.decode_tensors(batch["img"][idx], batch["sparse"][idx], batch["dense"][idx])[0][:, 0]


@torch.no_grad()
def _evaluate(view: PromptableModel, batch: dict, idx: list[int]) -> tuple[float, float]:
    """(mean loss, mean hard Dice) on the samples ``idx`` (no gradient)."""
    if not idx:
        return math.nan, math.nan
    lo = decoder_logits(view, batch, idx)
    t, v = batch["target"][idx], batch["valid"][idx]
    return float(dice_bce_loss(lo, t, v)), float(hard_dice(lo, t, v).mean())


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
    side = int(decoder_logits(view, {"img": img, "sparse": sparse, "dense": dense}, [0]).shape[-1])
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
            loss = dice_bce_loss(decoder_logits(view, batch, idx), batch["target"][idx], batch["valid"][idx])
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
