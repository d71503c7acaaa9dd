"""Tidy results files (one row per case x method x seed): written, read, and read if run. Summaries across seeds
live in :mod:`frozenseg.evaluation`."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import paths
from .errors import DataError
from .io import atomic_path

KEY_COLUMNS = ["notebook", "profile", "source", "model", "seed", "domain", "unit", "case_id", "method"]
# The notebook of each domain's training-free pipeline (sections 02-05).
PIPELINE_NOTEBOOKS = {"isic": "02_isic", "spleen": "03_spleen", "kvasir": "04_kvasir", "cxr": "05_cxr"}


def results_path(notebook: str, profile: str) -> Path:
    """``results/<profile>/<notebook>.parquet``."""
    return paths.results_dir(profile) / f"{notebook}.parquet"


def save_results(df: pd.DataFrame, notebook: str, profile: str) -> Path:
    """Validate and write a tidy results table atomically, rows sorted so reruns give identical files."""
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(None, f"results of {notebook} lack columns {missing}", "add them to every row")
    if df.duplicated(KEY_COLUMNS).any():
        dup = df[df.duplicated(KEY_COLUMNS, keep=False)].head(3)
        raise DataError(None, f"results of {notebook} repeat a case x method x seed:\n{dup}", "make the method names unique")
    for col in ("dice", "iou"):
        if col in df and ((df[col] < 0) | (df[col] > 1)).any():
            raise DataError(None, f"{col} outside [0, 1] in {notebook}", "check the metric inputs")
    df = df.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
    path = results_path(notebook, profile)
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path


def load_results(notebook: str, profile: str) -> pd.DataFrame:
    """Read a results table, with a clear error if the notebook that makes it has not run."""
    path = results_path(notebook, profile)
    if not path.is_file():
        raise DataError(path, "results file not found", f"run `make report PROFILE={profile}` (notebook {notebook})")
    return pd.read_parquet(path)


def results_if_run(notebook: str, profile: str) -> pd.DataFrame | None:
    """A notebook's results, or None when it has not run in this profile (a table shows it as pending)."""
    try:
        return load_results(notebook, profile)
    except DataError:
        return None
