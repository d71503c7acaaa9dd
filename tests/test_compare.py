"""The before/after table comparison a refactor is checked with (python -m frozenseg.compare)."""
import pandas as pd

from frozenseg.compare import compare_folders, is_timing, main


def _build(folder, dice=(0.81, 0.62), seconds=(1.0, 2.0), extra=None):
    folder.mkdir()
    t = pd.DataFrame({"domain": ["isic", "cxr"], "Dice": list(dice), "seconds": list(seconds),
                      "note": [None, "kept"], "sd": [float("nan"), 0.1]})
    t.to_csv(folder / "02_isic__budgets.csv", index=False)
    pd.DataFrame({"what": ["a"], "train_s": [3.0]}).to_csv(folder / "06__runs.csv", index=False)
    if extra:
        pd.DataFrame({"x": [1]}).to_csv(folder / extra, index=False)
    return folder


def test_identical_builds_agree_even_when_their_timings_differ(tmp_path):
    a, b = _build(tmp_path / "a"), _build(tmp_path / "b", seconds=(5.0, 9.0))
    assert compare_folders(a, b) == ([], 2)
    assert main([str(a), str(b)]) == 0


def test_a_changed_cell_or_a_missing_table_is_reported(tmp_path, capsys):
    a, b = _build(tmp_path / "a"), _build(tmp_path / "b", dice=(0.81, 0.63), extra="07_new.csv")
    diffs, same = compare_folders(a, b)
    assert same == 1 and {d.what for d in diffs} == {"cells", "only after"}
    cells = next(d for d in diffs if d.what == "cells").cells
    assert cells == [(1, "Dice", "0.62", "0.63")]
    assert main([str(a), str(b)]) == 1 and "1 of 3 tables identical" in capsys.readouterr().out


def test_timing_columns_are_the_measured_times_only():
    assert all(map(is_timing, ["train_s", "seconds", "decode work per slice (wall s)"]))
    assert not any(map(is_timing, ["learning rate", "strategy", "test units", "Dice"]))
