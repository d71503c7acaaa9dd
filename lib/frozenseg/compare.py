"""Two builds of the report, table by table: identical, or which cells differ.

A refactor that should not change a number is checked by building the report before and after (same profile, same
seeds) and comparing the two ``report/build/<profile>/tables`` folders::

    python -m frozenseg.compare BEFORE/tables AFTER/tables      # or: make compare BEFORE=... AFTER=...

Timing columns (wall-clock seconds, rates) are measured, not computed, so they are left out of the comparison; the
exit status is 1 when any other cell differs or a table is missing on one side.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

# A column whose name ends in "_s" or holds one of these is a measured time, different on every run.
TIMING_WORDS = ("seconds", "(wall s)", "(CPU s)")


def is_timing(column: str) -> bool:
    """True for a column that holds a wall-clock time (``train_s``, ``seconds``, ``... (wall s)``)."""
    c = str(column)
    return c.endswith("_s") or any(w in c for w in TIMING_WORDS)


@dataclass
class TableDiff:
    """How one table differs between two builds."""
    name: str
    what: str                       # "only before", "only after", "columns", "shape", "cells"
    detail: str = ""
    cells: list = field(default_factory=list)   # (row, column, before, after), first few

    def __str__(self) -> str:
        return f"{self.name}: {self.what}" + (f" ({self.detail})" if self.detail else "")


def compare_table(before: pd.DataFrame, after: pd.DataFrame, name: str = "table") -> TableDiff | None:
    """None when the tables agree outside their timing columns, else what differs."""
    a = before.drop(columns=[c for c in before.columns if is_timing(c)])
    b = after.drop(columns=[c for c in after.columns if is_timing(c)])
    if list(a.columns) != list(b.columns):
        gone, new = [c for c in a.columns if c not in b.columns], [c for c in b.columns if c not in a.columns]
        return TableDiff(name, "columns", f"before only {gone}, after only {new}")
    if a.shape != b.shape:
        return TableDiff(name, "shape", f"{a.shape} -> {b.shape}")
    sa, sb = _cells(a), _cells(b)
    rows, cols = (sa != sb).nonzero()
    if not len(rows):
        return None
    cells = [(int(r), a.columns[c], sa[r, c], sb[r, c]) for r, c in zip(rows[:5], cols[:5])]
    return TableDiff(name, "cells", f"{len(rows)} cell(s) differ, e.g. {cells[0]}", cells)


def _cells(table: pd.DataFrame) -> np.ndarray:
    """Every cell as text, a missing value as one marker (NaN never equals NaN, and text dtypes keep it missing)."""
    return np.array([["<missing>" if pd.isna(v) else str(v) for v in row] for row in table.itertuples(index=False)],
                    dtype=object).reshape(table.shape)


def compare_folders(before: Path, after: Path) -> tuple[list[TableDiff], int]:
    """Every ``*.csv`` of two table folders: the differences, and how many tables agree."""
    before, after = Path(before), Path(after)
    for d in (before, after):
        if not d.is_dir():
            raise DataError(d, "no such table folder", "pass report/build/<profile>/tables of a built report")
    names = sorted({p.name for p in before.glob("*.csv")} | {p.name for p in after.glob("*.csv")})
    diffs, same = [], 0
    for n in names:
        pa, pb = before / n, after / n
        if not pb.exists() or not pa.exists():
            diffs.append(TableDiff(n, "only before" if pa.exists() else "only after"))
            continue
        d = compare_table(pd.read_csv(pa), pd.read_csv(pb), n)
        if d is None:
            same += 1
        else:
            diffs.append(d)
    return diffs, same


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m frozenseg.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    diffs, same = compare_folders(args.before, args.after)
    for d in diffs:
        print(d)
    print(f"{same} of {same + len(diffs)} tables identical (timing columns left out)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
