"""Concept search: k learnable prompt tokens optimised through a frozen decoder on cached embeddings."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy import ndimage

from ..errors import ConfigError, DataError, FrozenSegError
from ..models.decoder_backend import DecoderBackend  # noqa: F401 (the default backend, re-exported)
from ..training import focal_loss, soft_dice_loss

FLAG_COLLAPSED = "concept_collapsed"
FLAG_SINGLE = "single_support"


class ConceptCollapsedError(FrozenSegError):
    """The learned concept predicts an empty mask on every support image."""


@dataclass(frozen=True)
class FitSettings:
    """Optimiser and loss settings of one concept fit (defaults: what fits through LiteMedSAM's frozen decoder)."""

    k: int = 4                       # concept tokens
    epochs: int = 60                 # one AdamW step per epoch (batch = the labelled set)
    lr: float = 0.1                  # the source's 5e-4 collapses LiteMedSAM concepts (SAM3_TEXT_SETTINGS keeps it)
    lr_min: float = 1e-3             # cosine schedule end (the source's 100:1 decay)
    weight_decay: float = 0.0
    clip: float = 1.0                # gradient-norm clip
    focal_weight: float = 20.0       # SAM's focal:Dice ratio of 20:1
    dice_weight: float = 1.0
    init: str = "random"             # "random": N(0, init_std); "zero": all k stay equal; "support": the backend's
                                     # support_tokens (mean box, centroid, foreground feature) plus that noise
    init_std: float = 0.1
    chunk: int = 8                   # images per decoder call; gradients accumulate, so only memory changes

    def with_(self, **kw) -> "FitSettings":
        """A copy with some fields changed (unknown names raise ConfigError)."""
        bad = set(kw) - set(self.__dataclass_fields__)
        if bad:
            raise ConfigError(f"unknown concept setting(s) {sorted(bad)}; valid: {sorted(self.__dataclass_fields__)}")
        return replace(self, **kw)


# The source's published settings for SAM3's text pathway (AdamW 5e-4 cosine-decayed to 5e-6). Through LiteMedSAM's
# decoder they move the tokens too little in a few dozen single-batch steps and the concepts collapse to empty masks
# (notebook 11's `lr_check` table fits both rates on each domain's start set).
SAM3_TEXT_SETTINGS = FitSettings(lr=5e-4, lr_min=5e-6)
# backend key -> its preset; a backend not listed here fits with FitSettings() defaults
SETTINGS_PRESETS: dict[str, FitSettings] = {"sam3": SAM3_TEXT_SETTINGS}


def default_settings(backend) -> FitSettings:
    """The fit settings a backend uses when none are given: its preset (SAM3: the source's) or FitSettings()."""
    key = backend if isinstance(backend, str) else getattr(backend, "key", "")
    return SETTINGS_PRESETS.get(key, FitSettings())


@dataclass
class Concept:
    """A learned concept: (k, C) prompt tokens plus how it was fitted."""

    tokens: np.ndarray                                 # (k, C) float32
    backend: str
    losses: list[float] = field(default_factory=list)  # loss per epoch
    n_support: int = 0
    flag: str = ""                                     # "", FLAG_SINGLE or FLAG_COLLAPSED

    def tensor(self, device="cpu") -> torch.Tensor:
        """Tokens as a (k, C) float32 tensor."""
        return torch.as_tensor(np.asarray(self.tokens, dtype=np.float32), device=device)


# ---------------------------------------------------------------- losses


def concept_loss(logits, target, valid, s: FitSettings) -> torch.Tensor:
    """Weighted focal + soft Dice (``FitSettings`` weights), mean over the batch."""
    p = logits.sigmoid()
    return (s.focal_weight * focal_loss(logits, target, valid, p=p)
            + s.dice_weight * soft_dice_loss(logits, target, valid, p=p)).mean()


# ---------------------------------------------------------------- fit / predict


def check_support(masks) -> None:
    """Raise DataError for an empty support set or an empty support mask (naming its index)."""
    if len(masks) == 0:
        raise DataError(None, "the support set is empty", "label at least one image before fitting a concept")
    for i, m in enumerate(masks):
        if not np.asarray(m).any():
            raise DataError(None, f"support mask {i} is empty",
                            "a concept is learned from foreground: drop images without the target or fix the mask")


INITS = ("support", "random", "zero")


def init_tokens(shape: tuple[int, int], s: FitSettings, seed: int, backend=None, feats=None, masks=None
                ) -> torch.Tensor:
    """Seeded initial concept: zeros, N(0, init_std), or (``support``) the backend's tokens made from the support
    masks plus that noise (a backend without ``support_tokens`` starts from the noise alone)."""
    if s.init not in INITS:
        raise ConfigError(f"unknown concept init {s.init!r}; use one of {INITS}")
    if s.init == "zero":
        return torch.zeros(shape)
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(shape, generator=g) * s.init_std
    if s.init == "support" and hasattr(backend, "support_tokens") and feats is not None:
        return backend.support_tokens(feats, masks, shape[0]).reshape(shape) + noise
    return noise


def cosine_lr(step: int, total: int, s: FitSettings) -> float:
    """Cosine decay from ``lr`` to ``lr_min`` over ``total`` steps."""
    if total <= 1:
        return s.lr
    return s.lr_min + 0.5 * (s.lr - s.lr_min) * (1 + math.cos(math.pi * step / (total - 1)))


def fit_concept(backend, feats, masks, settings: FitSettings | None = None, seed: int = 0,
                init: Concept | np.ndarray | None = None, require_nonempty: bool = False) -> Concept:
    """Optimise a concept on labelled (feature, mask) pairs (``settings`` None: ``default_settings(backend)``);
    ``init`` warm-starts from earlier tokens."""
    settings = default_settings(backend) if settings is None else settings
    check_support(masks)
    if len(feats) != len(masks):
        raise ConfigError(f"{len(feats)} embeddings for {len(masks)} masks")
    decode = _prepared(backend, list(feats))
    side = _low_side(backend, feats[0], decode)
    pairs = [backend.target(m, f, side) for m, f in zip(masks, feats)]
    tgt, valid = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]).float()
    start = init.tokens if isinstance(init, Concept) else init
    p0 = torch.as_tensor(np.asarray(start, dtype=np.float32)) if start is not None else \
        init_tokens(backend.tokens_like(settings.k), settings, seed, backend, feats, masks)
    param = torch.nn.Parameter(p0.clone())
    opt = torch.optim.AdamW([param], lr=settings.lr, weight_decay=settings.weight_decay)
    chunks = [slice(i, i + max(1, settings.chunk)) for i in range(0, len(feats), max(1, settings.chunk))]
    losses = []
    for step in range(settings.epochs):
        for grp in opt.param_groups:
            grp["lr"] = cosine_lr(step, settings.epochs, settings)
        opt.zero_grad()
        total = 0.0
        for sl in chunks:        # batch = the labelled set; chunks only bound memory (gradients accumulate)
            out = decode(param, sl)                              # on the model's device
            part = concept_loss(out, tgt[sl].to(out.device), valid[sl].to(out.device), settings)
            part = part * (len(tgt[sl]) / len(tgt))
            part.backward()
            total += float(part.detach())
        torch.nn.utils.clip_grad_norm_([param], settings.clip)
        opt.step()
        losses.append(total)
    concept = Concept(tokens=param.detach().cpu().numpy().astype(np.float32), backend=backend.key, losses=losses,
                      n_support=len(masks), flag=FLAG_SINGLE if len(masks) == 1 else "")
    return _check_collapse(concept, decode, chunks, len(feats), require_nonempty)


def _prepared(backend, feats):
    """``decode(tokens, idx)`` on fixed feats: the backend's prepared decoder, else its plain ``logits``."""
    if hasattr(backend, "prepare"):
        return backend.prepare(feats)
    return lambda tokens, idx=None: backend.logits(feats if idx is None else feats[idx], tokens)


def _low_side(backend, feat, decode=None) -> int:
    """Side of the backend's low-res output frame (probed once per backend)."""
    if not hasattr(backend, "_side"):
        with torch.no_grad():
            zero = torch.zeros(backend.tokens_like(1))
            out = decode(zero, slice(0, 1)) if decode is not None else backend.logits([feat], zero)
            backend._side = int(out.shape[-1])
    return backend._side


def _check_collapse(concept: Concept, decode, chunks, n: int, require_nonempty: bool) -> Concept:
    """Flag (or raise) when the concept predicts empty masks on every support image."""
    with torch.no_grad():
        fg = any(bool((decode(concept.tensor(), sl) > 0).any()) for sl in chunks)
    if not fg:
        if require_nonempty:
            raise ConceptCollapsedError(f"the concept predicts an empty mask on all {n} support images; "
                                        "try more epochs, a higher lr or a larger init_std")
        concept.flag = FLAG_COLLAPSED
    return concept


@torch.no_grad()
def predict_logits(backend, concept: Concept, feats, batch: int = 8) -> list[np.ndarray]:
    """(H, W) logits of the concept on each image (decode -> upscale to the image)."""
    out = []
    for i in range(0, len(feats), batch):
        chunk = feats[i:i + batch]
        low = backend.logits(chunk, concept.tensor())
        out += [backend.to_image(lo, f) for lo, f in zip(low, chunk)]
    return out


def tidy_mask(mask: np.ndarray) -> np.ndarray:
    """GT-free post-step: the largest connected component with its holes filled (an empty mask stays empty)."""
    mask = np.asarray(mask, bool)
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    keep = lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    return ndimage.binary_fill_holes(keep)


def predict(backend, concept: Concept, feats) -> list[np.ndarray]:
    """Binary (H, W) masks of the concept on each image."""
    return [lg > 0 for lg in predict_logits(backend, concept, feats)]
