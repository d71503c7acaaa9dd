"""Errors that name the file at fault and how to fix it."""
from __future__ import annotations

from pathlib import Path


class FrozenSegError(Exception):
    """Base class of the project's own errors."""


class DataError(FrozenSegError, ValueError):
    """A data file is missing, unreadable or inconsistent."""

    def __init__(self, path: str | Path | None, problem: str, fix: str):
        self.path, self.problem, self.fix = path, problem, fix
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}{problem}. Fix: {fix}")


class ChecksumError(DataError):
    """A file's sha256 differs from the one the manifest declares."""


class MissingDatasetError(DataError):
    """A real dataset or weight file declared in the manifest is not on disk."""


class ConfigError(FrozenSegError, ValueError):
    """An unknown domain, profile, model or parameter."""
