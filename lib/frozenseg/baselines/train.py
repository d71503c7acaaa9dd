"""Training one network: AdamW on Dice + BCE, light augmentation, early stopping on a split of the N labels."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..training import dice_bce_loss, hard_dice, validation_split

STATUS_OK, STATUS_FAILED = "ok", "failed"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@dataclass
class TrainRun:
    """How one training run went; ``state`` holds the best weights (None when it failed)."""

    status: str = STATUS_OK
    history: list[dict] = field(default_factory=list)   # per evaluation: step, train_loss, val_loss, val_dice
    best_step: int = 0
    steps_run: int = 0
    seconds: float = 0.0
    message: str = ""
    stop: str = ""                      # "plateau" (early stopping), "step budget" (the cap) or "failed"
    train_index: list[int] = field(default_factory=list)
    val_index: list[int] = field(default_factory=list)
    state: dict | None = None

    @property
    def ok(self) -> bool:
        """True unless the run diverged."""
        return self.status == STATUS_OK


# ---------------------------------------------------------------- tensors


def to_tensors(images: Sequence[np.ndarray], side: int) -> torch.Tensor:
    """(N, 3, side, side) float tensor of uint8 RGB images, resized and ImageNet-normalised."""
    if side < 32 or side % 32:
        raise ConfigError(f"image_side must be a multiple of 32 and >= 32 (the encoders downsample 32x), got {side}")
    x = torch.cat([_resize(torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None], side) for im in images])
    return (x - MEAN) / STD


def _resize(img: torch.Tensor, side: int) -> torch.Tensor:
    """(1, 3, H, W) uint8 -> (1, 3, side, side) float in [0, 1] (each image resized on its own)."""
    return F.interpolate(img.float() / 255.0, size=(side, side), mode="bilinear", align_corners=False, antialias=True)


def mask_tensors(masks: Sequence[np.ndarray], side: int) -> torch.Tensor:
    """(N, 1, side, side) float targets in {0, 1} (area-resized, then thresholded at 0.5)."""
    ys = [F.interpolate(torch.from_numpy(np.asarray(m, np.float32))[None, None], size=(side, side), mode="area")
          for m in masks]
    return (torch.cat(ys) >= 0.5).float()


def prepare(cases, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of labelled cases at ``side`` x ``side`` (each image resized on its own)."""
    if not len(cases):
        raise DataError(None, "no labelled cases to train on", "pass at least one labelled case")
    return to_tensors([c.image for c in cases], side), mask_tensors([c.mask for c in cases], side)


# ---------------------------------------------------------------- augmentation and loss


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Light augmentation: scale 0.9-1.1, shift up to 5 %, brightness/contrast +-10 %, flips where allowed."""
    b = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    scale = 0.9 + 0.2 * r(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = (r(b, 2) - 0.5) * 0.1
    if flip:
        theta[:, 0, 0] *= torch.where(r(b) < 0.5, -1.0, 1.0)
        theta[:, 1, 1] *= torch.where(r(b) < 0.5, -1.0, 1.0)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = (F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False) >= 0.5).float()
    x = x * (0.9 + 0.2 * r(b, 1, 1, 1)) + (r(b, 1, 1, 1) - 0.5) * 0.2
    return x, y


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice + BCE of (N, 1, H, W) logits, mean over the batch (the decoder tuner's loss, every pixel valid)."""
    return dice_bce_loss(logits[:, 0], target[:, 0], torch.ones_like(target[:, 0]))


@torch.no_grad()
def _evaluate(net, x, y, idx: list[int], batch_size: int) -> tuple[float, float]:
    """(mean loss, mean hard Dice) on the samples ``idx`` in eval mode."""
    if not idx:
        return math.nan, math.nan
    net.eval()
    dev = _device(net)
    losses, dices = [], []
    for s in range(0, len(idx), batch_size):
        part = idx[s:s + batch_size]
        lo, yb = net(x[part].to(dev)), y[part].to(dev)
        losses.append(float(loss_fn(lo, yb)) * len(part))
        dices += hard_dice(lo[:, 0], yb[:, 0], torch.ones_like(yb[:, 0])).tolist()
    net.train()
    return sum(losses) / len(idx), float(np.mean(dices))


# ---------------------------------------------------------------- the loop


def train_net(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int, lr: float,
              weight_decay: float = 1e-4, eval_every: int = 50, patience: int = 5, val_fraction: float = 0.2,
              seed: int = 0, flip: bool = False, clip: float = 1.0, min_delta: float = 0.0,
              monitor: str = "val_loss", precision: str = "fp32", progress=None) -> TrainRun:
    """Train ``net`` in place for up to ``steps`` AdamW steps; keep the weights with the best validation score
    (``monitor``: the lowest 'val_loss', or the highest 'val_dice') and stop early once ``patience`` evaluations in
    a row have not improved it by more than ``min_delta`` (relative for the loss, absolute for Dice): the validation
    plateau. ``run.stop`` says whether the plateau or the step budget ended the run. ``precision="bf16"`` runs the
    forward passes under bfloat16 autocast (mixed precision; where the CPU has no bf16 support, fp32)."""
    if monitor not in ("val_loss", "val_dice"):
        raise ConfigError(f"monitor must be 'val_loss' or 'val_dice', got {monitor!r}")
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if steps < 1 or batch_size < 1 or eval_every < 1 or patience < 1:
        raise ConfigError(f"need steps, batch_size, eval_every, patience >= 1 (got {steps}, {batch_size}, "
                          f"{eval_every}, {patience})")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    tr, va = validation_split(len(x), val_fraction, seed)
    run = TrainRun(train_index=tr, val_index=va)
    _loop(net, x, y, run, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
          eval_every=eval_every, patience=patience, seed=seed, flip=flip, clip=clip, min_delta=min_delta,
          monitor=monitor, autocast=autocast_context(net, precision), progress=progress)
    run.seconds = time.perf_counter() - t0
    return run


def optimizer(net: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused where the build supports it (faster steps on the CPU)."""
    try:
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)


def autocast_context(net: torch.nn.Module, precision: str):
    """A factory of autocast contexts for the forward passes: bfloat16 mixed precision when asked for and the device
    supports it, else a no-op (fp32)."""
    import contextlib

    dev = _device(net).type
    if precision == "bf16" and bf16_supported(dev):
        return lambda: torch.autocast(dev, dtype=torch.bfloat16)
    return contextlib.nullcontext


def bf16_supported(device: str = "cpu") -> bool:
    """True when ``device`` runs bfloat16 natively (a CPU with AVX-512 BF16 / AMX, or a bf16-capable GPU)."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _loop(net, x, y, run: TrainRun, *, steps, batch_size, lr, weight_decay, eval_every, patience, seed, flip,
          clip, min_delta, monitor, autocast, progress) -> None:
    """The optimisation loop of :func:`train_net` (fills ``run``)."""
    net.to(memory_format=torch.channels_last)   # NHWC: faster convolutions on the CPU
    opt = optimizer(net, lr, weight_decay)
    dev = _device(net)                          # data live on the CPU; batches move to the network's device
    gen = torch.Generator().manual_seed(int(seed))
    tr, va, best, bad, losses = run.train_index, run.val_index, math.inf, 0, []
    sign = 1.0 if monitor == "val_loss" else -1.0     # scores are minimised: the loss, or minus the Dice
    net.train()
    for step in range(1, steps + 1):
        idx = [tr[int(i)] for i in torch.randint(len(tr), (min(batch_size, len(tr)),), generator=gen)]
        xb, yb = (t.to(dev) for t in augment(x[idx], y[idx], gen, flip))
        xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = net(xb)
        loss = loss_fn(logits.float(), yb)
        if not torch.isfinite(loss):
            return _fail(run, step, f"non-finite training loss at step {step}")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        losses.append(float(loss.detach()))
        run.steps_run = step
        if progress is not None:
            progress.update(1)
        if step % eval_every and step != steps:
            continue
        precise_bn(net, x[tr], batch_size)
        val_loss, val_dice = _evaluate(net, x, y, va, batch_size)
        run.history.append({"step": step, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                            "val_dice": val_dice})
        losses = []
        if va and not math.isfinite(val_loss):
            return _fail(run, step, f"non-finite validation loss at step {step}")
        score = sign * (val_loss if monitor == "val_loss" else val_dice)
        if not va or score < best:
            margin = (abs(best) * min_delta if monitor == "val_loss" else min_delta) if math.isfinite(best) else 0.0
            bad = 0 if not va or score < best - margin else bad + 1
            best, run.best_step, run.state = score, step, snapshot(net)
        else:
            bad += 1
        if va and bad >= patience:
            run.stop = "plateau"
            break
    run.stop = run.stop or "step budget"
    net.load_state_dict(run.state)


@torch.no_grad()
def precise_bn(net: torch.nn.Module, x: torch.Tensor, batch_size: int, max_batches: int = 4) -> None:
    """Recompute BatchNorm running statistics on training images with the current weights ("precise BN"): after
    few steps the running averages still mix in the random-init activations and spoil evaluation."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    n = min(len(x), max_batches * max(batch_size, 2))
    if not bns or n < 2:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                     # cumulative average over the passes below
    net.train()
    starts = list(range(0, n, max(batch_size, 2)))
    if n - starts[-1] < 2 and len(starts) > 1:
        starts.pop()                          # a last batch of one merges into the one before (BN needs two)
    for s, e in zip(starts, starts[1:] + [n]):
        net(x[s:e].to(_device(net)))
    for m, mom in zip(bns, saved):
        m.momentum = mom


def _device(net: torch.nn.Module) -> torch.device:
    """The device the network's weights live on."""
    return next(net.parameters()).device


def snapshot(net: torch.nn.Module) -> dict:
    """A detached copy of the network's weights and buffers."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _fail(run: TrainRun, step: int, message: str) -> None:
    """Mark a run as failed (diverged): no weights are kept, its rows are flagged, never averaged in."""
    run.status, run.message, run.state, run.steps_run, run.stop = STATUS_FAILED, message, None, step, "failed"
    run.history.append({"step": step, "train_loss": math.nan, "val_loss": math.nan, "val_dice": math.nan})


# ---------------------------------------------------------------- prediction


@torch.no_grad()
def predict_masks(net: torch.nn.Module, images: Sequence[np.ndarray], side: int,
                  batch_size: int = 16) -> list[np.ndarray]:
    """Boolean masks at each image's own size: logits at ``side`` upsampled bilinearly, thresholded at 0."""
    net.eval()
    out = []
    for s in range(0, len(images), batch_size):
        part = images[s:s + batch_size]
        logits = net(to_tensors(part, side).to(_device(net)))
        for im, lo in zip(part, logits):
            up = F.interpolate(lo[None], size=im.shape[:2], mode="bilinear", align_corners=False)
            out.append((up[0, 0] > 0).cpu().numpy())
    return out
