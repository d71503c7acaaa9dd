"""Training pieces shared by the trained baselines, decoder tuning and concept search: the losses, hard Dice for
validation, the seeded validation split, and mask targets in a decoder's low-res output frame.

Every loss and score takes ``(logits, target, valid)``: (B, H, W) logits, soft targets in [0, 1] and the valid
(unpadded) region; pixels outside ``valid`` count for nothing.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError


# ---------------------------------------------------------------- the validation split


def validation_split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, val) index lists of the N labels: at least one of each when n >= 2, no val when n < 2."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    k = 0 if n < 2 or val_fraction == 0 else min(n - 1, max(1, int(round(n * val_fraction))))
    perm = np.random.default_rng([int(seed), 0x7A1D]).permutation(n)
    return sorted(int(i) for i in perm[k:]), sorted(int(i) for i in perm[:k])


# ---------------------------------------------------------------- losses and hard Dice


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, eps=1.0,
                   p: torch.Tensor | None = None) -> torch.Tensor:
    """Soft Dice loss over valid pixels, per image -> (B,); ``p``: sigmoid(logits) when already computed."""
    p = (logits.sigmoid() if p is None else p) * valid
    t = target * valid
    inter = (p * t).flatten(1).sum(1)
    return 1 - (2 * inter + eps) / (p.flatten(1).sum(1) + t.flatten(1).sum(1) + eps)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, alpha=0.25, gamma=2.0,
               p: torch.Tensor | None = None) -> torch.Tensor:
    """Sigmoid focal loss (RetinaNet form) averaged over valid pixels, per image -> (B,); ``p``: sigmoid(logits)."""
    p = logits.sigmoid() if p is None else p
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    loss = a_t * ce * (1 - p_t) ** gamma * valid
    return loss.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Soft Dice + BCE over the valid pixels, mean over the batch (the baselines' and the decoder tuner's loss)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid
    bce = bce.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    return (bce + soft_dice_loss(logits, target, valid)).mean()


def hard_dice(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of ``logits > 0`` against ``target > 0.5`` on the valid region, (B,); 1 where both are empty."""
    p, t = (logits > 0).float() * valid, (target > 0.5).float() * valid
    s = p.flatten(1).sum(1) + t.flatten(1).sum(1)
    return torch.where(s > 0, 2 * (p * t).flatten(1).sum(1) / s.clamp(min=1), torch.ones_like(s))


# ---------------------------------------------------------------- targets in the decoder's frame


def frame_size(input_size, input_frame: int, side: int) -> tuple[int, int]:
    """(h, w) of an image of ``input_size`` (its size inside the model's square input frame) in a ``side``-pixel
    low-res output frame; the rest of that frame is padding."""
    h, w = input_size
    s = side / input_frame
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def frame_target(mask: np.ndarray, input_size, input_frame: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A mask mapped into the low-res output frame (soft, area-resized, then padded) and the valid-region mask."""
    h, w = frame_size(input_size, input_frame, side)
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    m = F.interpolate(m, size=(h, w), mode="area")[0, 0]
    tgt = torch.zeros(side, side)
    tgt[:h, :w] = m
    valid = torch.zeros(side, side, dtype=torch.bool)
    valid[:h, :w] = True
    return tgt, valid


def frame_targets(model, masks, embeddings, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks mapped into ``model``'s low-res frame (resize + pad) and the valid regions as floats, each (N, S, S)."""
    pairs = [frame_target(m, e.input_size, model.input_frame, side) for m, e in zip(masks, embeddings)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]).float()
