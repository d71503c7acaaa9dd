"""Model registry: ``load_model(key)`` returns a PromptableModel (loaded once per process); SAM3, which takes learned
concepts rather than boxes, is registered too and loads with ``load_concept_model("sam3")``."""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..errors import ConfigError
from .base import Embedding, Prediction, PromptableModel, default_device  # noqa: F401
from .litemedsam import LiteMedSAM
from .sam import MedSAM, SamCheckpoint

# key -> (label, manifest weights key or None when bundled)
MODELS: dict[str, tuple[str, str | None]] = {
    "litemedsam": (LiteMedSAM.label, None),
    "sam_vit_b": ("SAM ViT-B (generic)", "sam_vit_b"),
    "sam_vit_l": ("SAM ViT-L (generic)", "sam_vit_l"),
    "sam_vit_h": ("SAM ViT-H (generic)", "sam_vit_h"),
    "medsam": (MedSAM.label, "medsam_vit_b"),
    "sam3": ("SAM3 (generic, concept prompts)", "sam3"),
}
# Keys whose model is a concept backend (notebook 11's concept_backend), not a box-promptable PromptableModel.
CONCEPT_MODELS = ("sam3",)


def set_threads(n: int | None = None) -> int:
    """Torch threads: ``n``, else ``FROZENSEG_THREADS`` (a parallel runner's share), else every core (2 on the
    project's machines); and keep freed memory (``keep_freed_memory``)."""
    import os

    n = n or int(os.environ.get("FROZENSEG_THREADS") or 0) or os.cpu_count() or 1
    torch.set_num_threads(n)
    keep_freed_memory()
    return n


# glibc's mallopt parameters (malloc.h) and the values set by keep_freed_memory.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024      # glibc's largest allowed value
TRIM_THRESHOLD = 512 * 1024 * 1024


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed tensor memory instead of handing it back to the kernel; True if set.

    PyTorch's CPU tensors come straight from malloc. By default glibc serves blocks of tens of MiB (the
    decoder's (B, 4096, 256) activations are 21 MiB at B = 5) with fresh mmap calls, or trims them off the
    heap when freed, so every training step pays a page fault per 4 KiB it writes: about 10,000 per
    concept-fit step, a fifth of its time. Raising the mmap and trim thresholds keeps those blocks on the
    heap for the next step. Linux with glibc only; ``FROZENSEG_KEEP_FREED_MEMORY=0`` leaves malloc alone.
    The cost: up to ``TRIM_THRESHOLD`` of freed memory stays with the process.
    """
    import ctypes
    import os
    import platform

    if os.environ.get("FROZENSEG_KEEP_FREED_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def load_model(key: str = "litemedsam", checkpoint: str | None = None, device: str | None = None) -> PromptableModel:
    """Load a model by key onto ``device`` (default: a GPU when present); loaded once per process."""
    from ..devices import record

    model = _load(key, None if checkpoint is None else str(checkpoint)).to(device or default_device())
    record(key, model)
    return model


@functools.lru_cache(maxsize=4)
def _load(key: str, checkpoint: str | None) -> PromptableModel:
    """Build a model on the CPU; checkpoints come from ``checkpoint`` or the manifest's target under the data root."""
    if key not in MODELS:
        raise ConfigError(f"unknown model {key!r}; choose one of {sorted(MODELS)}")
    if key in CONCEPT_MODELS:
        raise ConfigError(f"{key!r} takes learned concepts, not box prompts: use it as notebook 11's "
                          f"concept_backend={key!r} (frozenseg.models.load_concept_model), not as a model=... here")
    if key == "litemedsam":     # a copy under the data root (manifest target) takes precedence over the packaged file
        if checkpoint is None:
            from ..errors import MissingDatasetError
            from ..manifest import locate

            try:
                checkpoint = locate("litemedsam")
            except MissingDatasetError:
                checkpoint = None
        return LiteMedSAM.from_package(checkpoint=checkpoint)
    label, weights_key = MODELS[key]
    if checkpoint is None:
        from ..manifest import locate

        checkpoint = locate(weights_key)
    if key == "medsam":
        return MedSAM.from_checkpoint("vit_b", Path(checkpoint))
    return SamCheckpoint.from_checkpoint(key.removeprefix("sam_"), Path(checkpoint), key=key, label=label)


def load_concept_model(key: str = "sam3", path: str | Path | None = None, cache=None, device: str | None = None):
    """A concept backend by registry key (SAM3: weights from ``path`` or the manifest's ``sam3`` entry)."""
    if key not in CONCEPT_MODELS:
        raise ConfigError(f"{key!r} is not a concept model; choose one of {list(CONCEPT_MODELS)} "
                          "(box-promptable models go through concept.DecoderBackend(load_model(key)))")
    from .sam3 import load_sam3

    return load_sam3(path, cache=cache, device=device)
