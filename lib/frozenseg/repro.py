"""Determinism and provenance in one place: seeds, the environment line, the git commit."""
from __future__ import annotations

import os
import platform
import random
import subprocess

import numpy as np

from . import paths


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; CPU torch ops used here are deterministic given the seed."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


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
    """One line naming versions, device, data source, model, profile and seeds (printed by every notebook)."""
    import torch

    from . import __version__

    dev = "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}"
    return (f"frozenseg {__version__} | commit {git_commit()} | python {platform.python_version()} | "
            f"torch {torch.__version__} | numpy {np.__version__} | device {dev} | data {source} | "
            f"model {model} | profile {profile} | seeds {list(seeds)}")
