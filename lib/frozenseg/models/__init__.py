"""Model registry: ``load_model(key)`` returns a PromptableModel (loaded once per process)."""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..errors import ConfigError
from .base import Embedding, Prediction, PromptableModel  # noqa: F401
from .litemedsam import LiteMedSAM
from .sam import MedSAM, SamCheckpoint

# key -> (label, manifest weights key or None when bundled)
MODELS: dict[str, tuple[str, str | None]] = {
    "litemedsam": (LiteMedSAM.label, None),
    "sam_vit_b": ("SAM ViT-B (generic)", "sam_vit_b"),
    "sam_vit_l": ("SAM ViT-L (generic)", "sam_vit_l"),
    "sam_vit_h": ("SAM ViT-H (generic)", "sam_vit_h"),
    "medsam": (MedSAM.label, "medsam_vit_b"),
}


def set_threads(n: int | None = None) -> int:
    """Use all cores for torch (2 on the project's machines); returns the count."""
    import os

    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def default_device() -> str:
    """'cuda' when a GPU is visible (the full profile), else 'cpu' (``FROZENSEG_DEVICE`` overrides)."""
    import os

    return os.environ.get("FROZENSEG_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def load_model(key: str = "litemedsam", checkpoint: str | None = None, device: str | None = None) -> PromptableModel:
    """Load a model by key onto ``device`` (default: a GPU when present); loaded once per process."""
    return _load(key, None if checkpoint is None else str(checkpoint)).to(device or default_device())


@functools.lru_cache(maxsize=4)
def _load(key: str, checkpoint: str | None) -> PromptableModel:
    """Build a model on the CPU; checkpoints come from ``checkpoint`` or the manifest's target under the data root."""
    if key not in MODELS:
        raise ConfigError(f"unknown model {key!r}; choose one of {sorted(MODELS)}")
    if key == "litemedsam":
        return LiteMedSAM.from_package()
    label, weights_key = MODELS[key]
    if checkpoint is None:
        from ..manifest import locate

        checkpoint = locate(weights_key)
    if key == "medsam":
        return MedSAM.from_checkpoint("vit_b", Path(checkpoint))
    return SamCheckpoint.from_checkpoint(key.removeprefix("sam_"), Path(checkpoint), key=key, label=label)
