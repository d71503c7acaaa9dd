"""No route chosen on test scores: a domain's deployed route is chosen by cross-validation on the labels the
pipeline uses at each budget (frozenseg.experiments.route_choice), cached like the genome, and shown in notebook 02."""
import numpy as np
import pytest

from frozenseg.data import Case, DomainData
from frozenseg.errors import ConfigError
from frozenseg.experiments import route_choice as C
from frozenseg.pipeline.router import candidate_routes, get_route, load_routes


def _blob_case(name: str, i: int, centre: tuple[int, int]) -> Case:
    """A 96-px image: a dark disc (the target) on bright noise, centred near ``centre``."""
    rng = np.random.default_rng(i)
    img = (rng.random((96, 96, 3)) * 50 + 170).astype(np.uint8)
    yy, xx = np.mgrid[:96, :96]
    cy, cx = centre[0] + i % 3 - 1, centre[1] + (i // 3) % 3 - 1
    m = (yy - cy) ** 2 + (xx - cx) ** 2 < 15 ** 2
    img[m] = (rng.random((int(m.sum()), 3)) * 30 + 30).astype(np.uint8)
    return Case(f"{name}{i:02d}", "planted", img, m, source="folder")


@pytest.fixture(scope="module")
def planted():
    """A smoke study whose labelled train images hold the target in one corner and whose test images hold it in
    the other: the static few-shot box ('cxr' route) is near perfect on the labels and wrong on test, the
    SAM-feature prototype ('agnostic') finds the disc anywhere."""
    from frozenseg.study import setup

    study = setup(profile="smoke", seeds=[0], domains=["planted"], folders={"planted": "."}, verbose=False)
    study._data["planted"] = DomainData("planted", "folder", train=[_blob_case("tr", i, (28, 28)) for i in range(6)],
                                        test=[_blob_case("te", i, (68, 68)) for i in range(3)])
    return study


def test_routes_file_lists_candidates_and_no_typed_numbers():
    import re

    from frozenseg.pipeline.router import ROUTES_FILE

    assert [r.domain for r in candidate_routes("isic")] == ["isic", "isic_drawer", "concept", "persam", "selfprompt"]
    assert [r.domain for r in candidate_routes("kvasir")] == ["kvasir", "concept", "persam", "selfprompt"]
    assert get_route("kvasir_knn").localizer["transfer"] == "knn", "the kNN lever stays a route, not a candidate"
    assert [r.domain for r in candidate_routes("cxr")] == ["cxr", "concept", "persam", "selfprompt"], \
        "concept search and the peers compete"
    assert [r.domain for r in candidate_routes("spleen")] == ["spleen"], "no candidates key: the route itself"
    notes = " ".join(r.note for r in load_routes().values())
    assert not re.findall(r"\d\.\d", notes), "routes.yaml notes carry no measured numbers"
    assert "candidates" in ROUTES_FILE.read_text()


def test_a_single_candidate_needs_no_cross_validation(planted, monkeypatch):
    monkeypatch.setattr(C, "route_scores", lambda *a, **k: pytest.fail("no CV for one candidate"))
    rec = C.route_choice(planted, "planted", 0, 5, candidates=[get_route("cxr")])
    assert rec["name"] == "cxr" and rec["how"] == C.SINGLE and rec["scores"].empty


@pytest.mark.slow
def test_the_deployed_route_is_the_one_cv_prefers_on_the_labels_not_the_test_winner(planted, monkeypatch):
    from frozenseg.experiments.domain import label_sets, run_domain, settings

    seen = []
    real = C.route_scores

    def spy(model, cases, *a, **k):
        seen.append([c.case_id for c in cases])
        return real(model, cases, *a, **k)

    monkeypatch.setattr(C, "route_scores", spy)
    cands = [get_route("agnostic"), get_route("cxr")]
    df, info = run_domain(planted, "planted", 0, "02_isic", n_labels=5, candidates=cands, use_cache=False)
    sup, gen = label_sets(planted.data("planted").train, 5, 0, settings(planted.profile))
    assert len(seen) == 1 and set(seen[0]) == {c.case_id for c in sup + gen}, "CV sees exactly the pipeline's labels"
    assert not set(seen[0]) & {c.case_id for c in planted.data("planted").test}
    scores = info["choice"]["scores"]
    final = scores[scores.stage == "final"].set_index("route")["mean"]
    assert info["choice"]["how"] == C.CV and info["choice"]["name"] == "cxr" == final.idxmax()
    dep = df[df.stage == "deployed"]
    assert (dep.route == "cxr").all() and (dep.labels_used == 5).all(), "labels_used: the same labels, no more"
    other, _ = run_domain(planted, "planted", 0, "02_isic", n_labels=5, route=get_route("agnostic"))
    test_dice = {"cxr": dep.dice.mean(), "agnostic": other[other.stage == "deployed"].dice.mean()}
    assert test_dice["agnostic"] > test_dice["cxr"] + 0.2, f"planted: the test winner is the other route {test_dice}"
    # a rerun reads the cached choice (no CV), and a fixed route is said to be one
    again = C.route_choice(planted, "planted", 0, 5, candidates=cands)
    assert again["cached"] and again["name"] == "cxr" and len(seen) == 1
    assert (other[other.stage == "deployed"].route == "agnostic").all()


def test_choice_key_depends_on_specs_labels_and_settings(planted):
    from frozenseg.pipeline.router import with_localizer

    model, cases = planted.model, planted.data("planted").train[:4]
    rs = C.choice_settings(planted.profile)
    base = C.choice_key(candidate_routes("isic"), model, cases, rs, 0)
    assert base == C.choice_key(candidate_routes("isic"), model, cases, rs, 0)
    other = [get_route("isic"), with_localizer(get_route("isic_drawer"), polarity="bright")]
    assert len({base, C.choice_key(other, model, cases, rs, 0), C.choice_key(candidate_routes("isic"), model,
               cases[:3], rs, 0), C.choice_key(candidate_routes("isic"), model, cases, {**rs, "folds": 4}, 0)}) == 4


def test_unknown_candidate_names_the_file(tmp_path):
    bad = tmp_path / "routes.yaml"
    bad.write_text("a:\n  localizer: {name: static_box}\n  candidates: [a, b]\n")
    with pytest.raises(ConfigError, match="candidate route.*'b'"):
        load_routes(bad)


def test_choice_table_shows_each_choice_once_with_the_budgets_that_share_its_labels():
    import pandas as pd

    from frozenseg.experiments.domain_report import choice_table

    scores = pd.DataFrame({"route": ["isic", "isic_drawer", "isic_drawer"], "stage": ["screen", "screen", "final"],
                           "mean": [0.5, 0.7, 0.72], "sd": [0.1, 0.1, 0.05], "fold_means": [[0.4, 0.6]] * 3,
                           "chosen": [False, False, True]})
    rec = {"seed": 0, "labels": ["a", "b", "c"], "how": C.CV, "name": "isic_drawer", "scores": scores}
    t = choice_table([{**rec, "n_labels": 5}, {**rec, "n_labels": 10},
                      {**C.given_route(get_route("isic"), 25, 0)}])
    assert t.N.tolist() == ["5, 10"] * 3 + ["25"] and t.chosen.tolist() == ["", "", "✓", "✓"]
    assert t.how.iloc[-1] == C.GIVEN and t["held-out Dice"].iloc[2] == "0.720 ± 0.050"
