"""The gallery's failure classes (frozenseg.experiments.gallery): each deployed unit against the GT-box oracle."""
import pandas as pd

from frozenseg.experiments.gallery import FAILURES, failure_classes, failure_table


def _rows(cases):
    """Results rows: (case id, deployed Dice, oracle Dice, negative) at one budget and seed."""
    rows = []
    for cid, dep, orc, neg in cases:
        for stage, d in (("deployed", dep), ("oracle", orc)):
            rows.append({"domain": "kvasir", "seed": 0, "case_id": cid, "unit": "case", "n_labels": 10,
                         "stage": stage, "dice": d, "negative": neg})
    return pd.DataFrame(rows)


def test_each_unit_gets_the_class_its_oracle_and_deployed_dice_say():
    df = _rows([("a", 0.9, 0.92, False), ("b", 0.0, 0.95, False), ("c", 0.5, 0.9, False), ("d", 0.3, 0.5, False),
                ("e", 1.0, 1.0, True)])
    small = _rows([("a", 0.1, 0.92, False)]).assign(n_labels=5)        # a smaller budget: not counted
    m = failure_classes(pd.concat([df, small])).set_index("case_id")
    assert m.failure.to_dict() == {"a": "near oracle", "b": "missed", "c": "partial", "d": "decoder limit",
                                   "e": "no target"}
    t = failure_table(df).set_index("failure")
    assert set(t.index) <= set(FAILURES) and t.units.sum() == 5 and abs(t.share.sum() - 1) < 1e-9
    gaps = {"a": 0.02, "b": 0.95, "c": 0.4, "d": 0.2, "e": 0.0}
    assert abs(t.loc["missed", "gap_share"] - 0.95 / sum(gaps.values())) < 1e-9
    assert failure_table(pd.DataFrame()).empty
