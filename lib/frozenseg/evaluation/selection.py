"""Choices (a route, the best network, a strategy) are made on labels or validation data, never on test scores.

A results table's ``dice`` column is the test score; a selection reads another column: the router's
cross-validated Dice on the labels (``label_dice``), a network's validation Dice at its kept weights
(``val_dice``), concept search's cross-validated Dice on its labelled pool. :func:`select_best` refuses a test
column, so a table cannot quietly pick its winner from the numbers it then reports.
"""
from __future__ import annotations

import pandas as pd

from ..errors import ConfigError

TEST_COLUMNS = ("dice", "iou", "hd95", "mean", "test_dice")


def select_best(table: pd.DataFrame, by: list[str], on: str) -> pd.DataFrame:
    """Per group of ``by``, the row with the highest ``on`` (a label or validation score; ties: the first row).
    Test-score columns are refused. Rows without a finite ``on`` are never chosen; a group without any keeps no
    row."""
    if on in TEST_COLUMNS or on.startswith("test"):
        raise ConfigError(f"select_best(on={on!r}): that column holds test scores; choose on a label or validation "
                          "score (e.g. 'val_dice', 'label_dice')")
    if on not in table:
        raise ConfigError(f"select_best: no column {on!r} to choose on (columns: {list(table.columns)})")
    ok = table[pd.to_numeric(table[on], errors="coerce").notna()]
    if not len(ok):
        return table.iloc[:0]
    idx = ok.groupby(list(by), sort=False)[on].idxmax()
    return table.loc[idx.to_numpy()].reset_index(drop=True)
