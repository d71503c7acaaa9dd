"""Notebook 09's tables and test scoring: the route is chosen on the labels, the hindsight best route on test is a
labelled reference only, and test units (negatives included) are scored through the evaluation core."""
import numpy as np
import pandas as pd
import pytest

from frozenseg import evaluation as ev
from frozenseg.data.types import Case, DomainData
from frozenseg.experiments import router


def _routes():
    """Two seeds, three routes: 'agnostic' wins on test only; the labels (label_dice) choose 'cxr'."""
    test = {"agnostic": (0.9, 0.8), "cxr": (0.6, 0.5), "isic": (0.3, 0.4)}
    label = {"agnostic": 0.2, "cxr": 0.7, "isic": 0.5}
    rows = []
    for route, per_seed in test.items():
        for seed, d in enumerate(per_seed):
            for i in range(4):
                rows.append({"domain": "isic", "seed": seed, "route": route, "unit": "case", "case_id": f"c{i}",
                             "dice": d, "label_dice": label[route], "label_sd": 0.05, "genome": False,
                             "chosen": route == "cxr", "negative": i == 3})
    return pd.DataFrame(rows)


def test_routing_table_reports_the_label_choice_and_labels_hindsight_as_a_reference():
    t = router.routing_table(_routes()).iloc[0]
    assert t["route chosen (on the labels)"] == "cxr"
    assert t["routed"] == ev.fmt_mean_sd(*ev.mean_sd([0.6, 0.5])[:2]) == "0.550 ± 0.071", "sd with n - 1"
    assert "chooses nothing" in router.HINDSIGHT and t[router.HINDSIGHT] == "0.850 ± 0.071 (agnostic)"
    assert t["own route"] == "0.350 ± 0.071" and float(t["regret"]) == pytest.approx(0.3)
    assert "best on test (hindsight)" not in t.index
    s = router.route_scores_table(_routes()).set_index("route")
    assert s.loc["cxr", "chosen"] == "✓" and s.loc["agnostic", "chosen"] == "" and s.loc["cxr", "test Dice"] == \
        "0.550 ± 0.071"
    assert router.unit_counts(_routes()) == {"isic": "4 units, 1 negative"}


class _Study:
    def __init__(self, data):
        self._d = data

    def data(self, domain):
        return self._d


def test_router_test_units_keep_negatives_and_score_at_native_resolution(native_pair):
    cases, _ = native_pair
    study = _Study(DomainData("mine", "folder", train=[], test=cases))
    assert [c.case_id for c in ev.test_units(study.data("mine"), 2)] == ["a", "b"], "the negative stays"
    fp = np.zeros_like(cases[1].mask)
    fp[:5, :5] = True
    rows = router._unit_rows(study, "mine", cases, [cases[0].mask, fp])
    assert [r["unit"] for r in rows] == ["case", "case"] and "index" not in rows[0]
    assert rows[0]["dice"] == pytest.approx(ev.score_case(cases[0].mask, cases[0], False)["dice"])
    assert rows[0]["dice"] < 0.99, "scored against the 1000 px mask, not the 512 px one it was predicted on"
    assert rows[1]["negative"] and rows[1]["dice"] == 0.0, ev.EMPTY_RULE
    empty = router._unit_rows(study, "mine", cases[1:], [np.zeros_like(fp)])[0]
    assert empty["dice"] == 1.0 and empty["negative"]


def test_a_tiny_case_is_scored_as_loaded():
    c = Case("x", "d", np.zeros((8, 8, 3), np.uint8), np.eye(8, dtype=bool))
    rows = router._unit_rows(_Study(DomainData("d", "phantom", [], [c])), "d", [c], [np.eye(8, dtype=bool)])
    assert rows[0]["dice"] == 1.0 and not rows[0]["negative"]
