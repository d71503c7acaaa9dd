"""Gate-validity statistics and the keep-best audit (notebook 10), and the gallery's picks (notebook 12), on
synthetic inputs: no model, seconds."""
import numpy as np
import pandas as pd
import pytest

from frozenseg import evaluation as ev
from frozenseg.data.types import Case, DomainData, Volume
from frozenseg.experiments import gallery as G
from frozenseg.experiments import gate_validity
from frozenseg.pipeline.core import Stage, Trace
from frozenseg.experiments.domain import save_masks
from frozenseg.results import save_results


def _square(n=32, a=8, b=24):
    m = np.zeros((n, n), bool)
    m[a:b, a:b] = True
    return m


def _candidates(gate_of, n_cases=12, n_cand=8, seed=0, domain="d"):
    """Candidate rows whose Dice is random and whose gate is ``gate_of(dice, rng)``."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_cases):
        d = rng.uniform(0.2, 0.95, n_cand)
        for k, (di, gi) in enumerate(zip(d, gate_of(d, rng))):
            rows.append({"unit": "candidate", "domain": domain, "seed": 0, "case_id": f"c{c:02d}",
                         "cluster": f"c{c:02d}", "method": f"m{k}", "gate": gi, "dice": di, "loop": k < 4,
                         "deployed": k == 0})
    return pd.DataFrame(rows)


def test_perfect_gate_gives_rho_one_and_a_reversed_gate_minus_one():
    perfect = gate_validity.correlations(_candidates(lambda d, rng: d ** 4), n_boot=50, seed=0)   # monotone, not linear
    assert perfect["within"] == pytest.approx(1.0) and perfect["pooled"] == pytest.approx(1.0)
    assert perfect["within_lo"] == pytest.approx(1.0)
    assert gate_validity.verdict(perfect["within_lo"], perfect["within_hi"]) == "valid"
    reversed_ = gate_validity.correlations(_candidates(lambda d, rng: 1 - d), n_boot=50, seed=0)
    assert reversed_["within"] == pytest.approx(-1.0)
    assert gate_validity.verdict(reversed_["within_lo"], reversed_["within_hi"]) == "inverted"


def test_bootstrap_interval_contains_estimate_and_noise_gate_is_not_valid():
    noisy = _candidates(lambda d, rng: d + rng.normal(0, 0.3, d.size), n_cases=20, seed=1)
    c = gate_validity.correlations(noisy, n_boot=300, seed=3)
    assert c["within_lo"] <= c["within"] <= c["within_hi"]
    assert c["pooled_lo"] <= c["pooled"] <= c["pooled_hi"]
    assert 0 < c["within"] < 1 and c["within_hi"] - c["within_lo"] > 0.05
    random = gate_validity.correlations(_candidates(lambda d, rng: rng.uniform(size=d.size), n_cases=20, seed=2),
                                        300, 3)
    assert random["within_lo"] < 0 < random["within_hi"]
    assert gate_validity.verdict(random["within_lo"], random["within_hi"]) == "not shown"
    again = gate_validity.correlations(noisy, n_boot=300, seed=3)
    assert (again["within_lo"], again["within_hi"]) == (c["within_lo"], c["within_hi"]), "seeded bootstrap"


def test_cluster_bootstrap_resamples_whole_clusters():
    # clusters of constant values: a resample can only mix whole clusters, so the mean stays in [0, 10] and reaches
    # 10 whenever the zero cluster is left out; resampling single points instead would keep it near 80 / 58
    groups = [np.zeros(50)] + [np.full(2, 10.0)] * 4
    lo, hi = ev.cluster_bootstrap(groups, gate_validity._mean_rho, 400, seed=0)
    assert 0.0 <= lo < 1.0 and hi == pytest.approx(10.0)
    few = [np.zeros(3), np.ones(3), np.ones(3), np.zeros(3)][: ev.MIN_UNITS - 1]
    assert np.isnan(ev.cluster_bootstrap(few, gate_validity._mean_rho, 10, 0)[0]), \
        f"below {ev.MIN_UNITS} units: no interval"
    assert gate_validity.verdict(*ev.cluster_bootstrap([np.ones(3)], gate_validity._mean_rho, 10, 0)) == "no interval"


def test_spearman_is_nan_for_constant_or_tiny_inputs():
    assert np.isnan(ev.spearman([0.1, 0.2], [0.3, 0.4]))
    assert np.isnan(ev.spearman([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))
    assert ev.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_validity_uses_the_evaluation_core_not_copies():
    for name in ("cluster_bootstrap", "spearman", "fmt_ci", "MIN_UNITS"):
        assert not hasattr(gate_validity, name), f"gate_validity.{name} is a copy of evaluation.{name}"
    noisy = _candidates(lambda d, rng: d + rng.normal(0, 0.3, d.size), n_cases=ev.MIN_UNITS - 1)
    c = gate_validity.correlations(noisy, 50, 0)
    verdict = gate_validity.verdict(c["within_lo"], c["within_hi"])
    assert np.isfinite(c["within"]) and np.isnan(c["within_lo"]) and verdict == "no interval", \
        f"{ev.MIN_UNITS - 1} cases: no interval"


def test_candidates_of_a_test_image_are_scored_at_native_resolution(native_pair):
    case = native_pair[0][0]
    cand = [{"origin": "localize", "stage": "localize", "mask": case.mask, "gate": 0.5, "loop": True}]
    row, = gate_validity.score_candidates(cand, case, case.mask, case.mask)
    assert row["dice"] == pytest.approx(ev.score_case(case.mask, case, with_hd95=False)["dice"]) and row["dice"] < 0.99
    scored = gate_validity.score_candidates(cand, case.mask, case.mask, case.mask)
    assert scored[0]["dice"] == 1.0, "a bare mask: as given"
    neg = Case("n", "mine", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), bool))
    fp = np.zeros((8, 8), bool)
    fp[2:4, 2:4] = True
    steps = gate_validity.step_rows([np.zeros_like(fp), fp], [0.1, 0.2], ["localize", "grow"], [False, True],
                                    [False, True], [[], [fp]], neg)
    assert steps[0]["dice_before"] == 1.0 and steps[0]["dice"] == 0.0, ev.EMPTY_RULE


def test_perturbed_boxes_are_scaled_and_shifted_inside_the_image():
    boxes = dict(gate_validity.perturbed_boxes([10, 10, 29, 29], (64, 64)))
    assert len(boxes) == len(gate_validity.SCALES) + 4
    w = lambda b: b[2] - b[0]  # noqa: E731
    assert w(boxes["scale_0.7"]) < w(boxes["scale_0.85"]) < 19 < w(boxes["scale_1.15"]) < w(boxes["scale_1.3"])
    assert boxes["shift_left"][0] < 10 and boxes["shift_right"][0] > 10 and boxes["shift_up"][1] < 10
    edge = dict(gate_validity.perturbed_boxes([0, 0, 63, 63], (64, 64)))
    assert all((b >= 0).all() and (b <= 63).all() for b in edge.values())
    assert [n for n, _ in gate_validity.perturbed_boxes([10, 10, 29, 29], (64, 64), ["shift_up", "scale_1.3"])] == \
        ["shift_up", "scale_1.3"]


def test_settings_follow_the_profile_and_reject_unknown_perturbations():
    smoke = gate_validity.settings("smoke")
    assert smoke["perturb"] == gate_validity.PERTURBATIONS and smoke["n_boot"] < 1000
    cpu = gate_validity.settings("cpu", n_boot=50)
    assert cpu["n_boot"] == 50 and 0 < len(cpu["perturb"]) < len(gate_validity.PERTURBATIONS)
    none = gate_validity.settings("cpu", perturb=[])
    assert none["perturb"] == () == none["spleen_perturb"]
    assert len(gate_validity.settings("cpu")["spleen_perturb"]) < len(cpu["perturb"])
    with pytest.raises(Exception, match="unknown perturbation"):
        gate_validity.settings("smoke", perturb=["scale_9"])


def _trace(gt):
    """A trace whose first skill's gate-accepted proposal lowers Dice and whose second rejects a better one."""
    good, bloated, tight = gt.copy(), np.zeros_like(gt), np.zeros_like(gt)
    bloated[2:30, 2:30] = True
    tight[9:23, 9:23] = True
    perfect = gt.copy()
    stages = [Stage("localize", tight, 0.5),
              Stage("grow", bloated, 0.7, True, True, "grow", [("grow", bloated, 0.7)]),
              Stage("fix", bloated, 0.7, True, False, "grow", [("fix", perfect, 0.6), ("fix2", tight, 0.5)])]
    return Trace(localization={}, stages=stages, decoder_calls=3), good


def test_audit_finds_harmful_accepts_and_the_best_in_hindsight_beats_the_gate():
    gt = _square()
    tr, _ = _trace(gt)
    cands = gate_validity.trace_candidates(tr)
    rows = gate_validity.score_candidates(cands, gt, tr.final, tr.stages[0].mask)
    assert len(rows) == 3, "the repeated 'tight' proposal is merged with the localize mask"
    assert sum(r["deployed"] for r in rows) == 1 and sum(r["localize_mask"] for r in rows) == 1
    st = tr.stages
    steps = gate_validity.step_rows([s.mask for s in st], [s.gate for s in st], [s.name for s in st],
                                    [s.fired for s in st], [s.accepted for s in st],
                                    [[m for _, m, _ in s.proposals] for s in st], gt)
    deployed = [r for r in rows if r["deployed"]][0]["dice"]
    case = gate_validity.case_row(rows[0]["dice"], deployed, [r["dice"] for r in rows])
    best = case["dice_best_in_hindsight"]
    assert best == pytest.approx(1.0) and best >= case["dice_deployed"] and best >= case["dice_localize"]
    base = {"domain": "d", "seed": 0, "case_id": "c0", "cluster": "c0"}
    df = pd.DataFrame([{**base, "unit": "candidate", **r} for r in rows]
                      + [{**base, "unit": "step", **r} for r in steps] + [{**base, "unit": "case", **case}])
    a = gate_validity.keep_best_audit(df).iloc[0]
    assert a["accepts"] == 1 and a["harmful accepts"] == 1 and a["helpful accepts"] == 0
    assert a["missed improvements"] == 1
    assert a["gate-kept"] < a["localize"] < a["best-in-hindsight"] and a["captured"] < 0
    named = [*case, *a.index]
    assert not [n for n in named if "oracle" in n], "'oracle' is the GT-box decoder only, not a mask kept in hindsight"
    s = gate_validity.skill_audit(df)
    assert s.set_index("skill").loc["grow", "harmful"] == 1 and s.set_index("skill").loc["fix", "accepted"] == 0


def test_gallery_picks_best_and_worst():
    df = pd.DataFrame({"stage": ["deployed"] * 7 + ["localize"], "case_id": list("abcdefg") + ["a"],
                       "dice": [0.5, 0.9, 0.1, 0.7, 0.3, 0.95, 0.2, 1.0]})
    best, worst = G.pick_cases(df, 3)
    assert list(best.case_id) == ["f", "b", "d"]
    assert list(worst.case_id) == ["c", "g", "e"]


def test_gallery_notes_missing_domains_and_shows_saved_masks():
    profile = "gallerytest"
    rng = np.random.default_rng(0)
    cases = [Case(f"k{i}", "kvasir", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), _square()) for i in range(4)]
    vol_mask = np.zeros((32, 32, 5), bool)
    vol_mask[8:24, 8:24, 2] = True
    vol_mask[10:20, 10:20, 3] = True
    vol = Volume("v0", "spleen", rng.integers(0, 255, (32, 32, 5), dtype=np.uint8), vol_mask, (1.0, 1.0, 1.0))
    data = {"kvasir": DomainData("kvasir", "phantom", [], cases),
            "spleen": DomainData("spleen", "phantom", [], [], volumes={"v0": vol})}
    base = {"notebook": "04_kvasir", "profile": profile, "source": "phantom", "model": "m", "seed": 0,
            "domain": "kvasir", "unit": "case", "stage": "deployed"}
    dices = [0.8, 0.4, 0.9, 0.1]
    save_results(pd.DataFrame([{**base, "case_id": c.case_id, "method": "deployed", "dice": d}
                               for c, d in zip(cases, dices)]), "04_kvasir", profile)
    save_masks({c.case_id: c.mask for c in cases}, "04_kvasir", profile, "kvasir", 0)
    save_results(pd.DataFrame([{**base, "notebook": "03_spleen", "domain": "spleen", "unit": "volume",
                                "case_id": "v0", "method": "deployed", "dice": 0.77}]), "03_spleen", profile)
    save_masks({"v0": vol_mask}, "03_spleen", profile, "spleen", 0)
    panels, notes = G.gallery(["isic", "kvasir", "spleen", "cxr"], profile, 0, data.__getitem__, n=2)
    assert len(notes) == 2 and "02_isic" in notes[0] and "05_cxr" in notes[1]
    assert [p.case_id for p, _, _ in panels["kvasir\nbest"]] == ["k2", "k0"]
    assert [p.case_id for p, _, _ in panels["kvasir\nworst"]] == ["k3", "k1"]
    assert "Dice 0.900" in panels["kvasir\nbest"][0][2]
    (p, pred, cap), = panels["spleen\nbest"]
    assert p.case_id == "v0 z2" and pred.shape == (32, 32) and pred.sum() == 256 and "volume Dice 0.770" in cap
    _, other_seed = G.gallery(["kvasir"], profile, 1, data.__getitem__)
    assert "seed 1" in other_seed[0]
