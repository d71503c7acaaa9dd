"""The few-shot SAM peers (PerSAM, Self-prompting SAM): localizers on easy images, their rows beside each domain's
route on the same test units and label draws, their headline cells, and a peer deployed when it wins the choice."""
import numpy as np
import pandas as pd
import pytest

from frozenseg.data import Case, DomainData
from frozenseg.evaluation.metrics import dice
from frozenseg.localizers import make_localizer
from frozenseg.localizers.persam import extreme_points
from frozenseg.localizers.selfprompt import fit_logistic
from frozenseg.pipeline.core import Pipeline
from frozenseg.pipeline.router import get_route


def _ellipse(i: int, jitter: int = 1) -> Case:
    """A 128 x 160 image: a dark ellipse (the target) on light noise, its centre and size varying with ``i``."""
    rng = np.random.default_rng(i)
    img = (rng.random((128, 160, 3)) * 40 + 140).astype(np.uint8)
    yy, xx = np.mgrid[:128, :160]
    cy, cx = 50 + jitter * 4 * (i % 4), 60 + jitter * 6 * (i % 5)
    m = ((yy - cy) / (22 + i % 4)) ** 2 + ((xx - cx) / (30 + i % 3)) ** 2 < 1
    img[m] = 40
    return Case(f"e{i:02d}", "easy", img, m, source="folder")


@pytest.fixture(scope="module")
def easy(litemedsam):
    """Six easy images with embeddings: four labelled, two queries."""
    cases = [_ellipse(i) for i in range(6)]
    return cases, [litemedsam.encode(c.image) for c in cases]


def test_persam_one_shot_uses_exactly_one_support_and_n_shot_all(litemedsam, easy):
    cases, embs = easy
    one = make_localizer("persam", model=litemedsam, shots=1).fit(cases[:4], embs[:4])
    every = make_localizer("persam", model=litemedsam).fit(cases[:4], embs[:4])
    assert one.support_ids == ["e00"] and every.support_ids == ["e00", "e01", "e02", "e03"]
    assert not np.allclose(one.target, every.target), "N supports: the mean over their target features"
    assert np.isclose(np.linalg.norm(every.target), 1.0)


def test_persam_finds_the_target_and_its_cascade_refines_the_point_decode(litemedsam, easy):
    """The location map's maximum lies in the target and its minimum outside; the cascade (mask input, then the
    box) turns the points' mask into one that overlaps the target well above the points alone. LiteMedSAM was
    trained on boxes only, so the points alone decode a near-empty mask: that is the limit the caption states."""
    cases, embs = easy
    loc = make_localizer("persam", model=litemedsam).fit(cases[:4], embs[:4])
    for c, e in zip(cases[4:], embs[4:]):
        sim = loc.location_map(c.image, e)
        pts, labels = extreme_points(sim)
        assert list(labels) == [1, 0]
        assert c.mask[int(pts[0, 1]), int(pts[0, 0])] and not c.mask[int(pts[1, 1]), int(pts[1, 0])]
        assert sim[c.mask].mean() > sim[~c.mask].mean() + 0.1
        masks, calls = loc.decode_cascade(e, pts, labels)
        assert len(masks) == 3 and calls == 3
        first, final = dice(masks[0], c.mask), dice(masks[-1], c.mask)
        assert final > first + 0.05 and final > 0.1, (first, final)
        r = loc.locate(c.image, e)
        assert r.mask is not None and np.array_equal(r.mask, masks[-1]) and r.points.shape == (2, 2)


def test_selfprompt_point_lies_inside_its_predicted_mask_and_segments_easy_images(litemedsam, easy):
    cases, embs = easy
    pipe = Pipeline(get_route("selfprompt"), litemedsam).fit(cases[:4], embs[:4])
    scores = []
    for c, e in zip(cases[4:], embs[4:]):
        r = pipe.localizer.locate(c.image, e)
        coarse = r.extra["coarse_mask"]
        x, y = r.points[0]
        assert r.point_labels.tolist() == [1] and coarse[int(round(y)), int(round(x))], "the point is inside the mask"
        assert r.box[0] <= x <= r.box[2] and r.box[1] <= y <= r.box[3]
        assert dice(coarse, c.mask) > 0.5, "the head's own mask finds the target"
        scores.append(dice(pipe.run(c.image, e).final, c.mask))
    assert np.mean(scores) > 0.6, scores


def test_logistic_head_reaches_the_optimum_of_its_objective():
    """At the solution the gradient of C * sum(log loss) + |w|^2 / 2 vanishes (scikit-learn's default objective)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = (x @ np.array([1.5, -2.0, 0.5, 0.0, 1.0]) + 0.3 + rng.normal(scale=0.8, size=400)) > 0
    w, b = fit_logistic(x, y, c=1.0, max_iter=200)
    p = 1 / (1 + np.exp(-(x @ w + b)))
    assert np.abs(x.T @ (p - y) + w).max() < 1e-3 and abs((p - y).sum()) < 1e-3
    w_strong, _ = fit_logistic(x, y, c=0.001)
    assert np.linalg.norm(w_strong) < 0.5 * np.linalg.norm(w), "a smaller C shrinks the weights"


def _moving(i: int) -> Case:
    """Like ``_ellipse`` but the target wanders over the whole image, so a fixed few-shot box cannot follow it."""
    c = _ellipse(i, jitter=0)
    shift = ((i * 37) % 50 - 20, (i * 53) % 80 - 25)
    return Case(f"m{i:02d}", "moving", np.roll(c.image, shift, (0, 1)), np.roll(c.mask, shift, (0, 1)),
                source="folder")


@pytest.fixture(scope="module")
def moving():
    """A smoke study of one folder domain whose target wanders (train 6 labelled images, test 3)."""
    from frozenseg.study import setup

    study = setup(profile="smoke", seeds=[0], domains=["moving"], folders={"moving": "."}, verbose=False)
    study._data["moving"] = DomainData("moving", "folder", train=[_moving(i) for i in range(6)],
                                       test=[_moving(i) for i in range(20, 23)])
    return study


@pytest.mark.slow
def test_peer_rows_sit_beside_the_route_on_the_same_units_with_their_labels(moving):
    from frozenseg.experiments.budgets import label_sets, settings
    from frozenseg.experiments.domain import run_domain
    from frozenseg.experiments.domain_report import comparison_table
    from frozenseg.experiments.peers import PEER_STAGES

    df, info = run_domain(moving, "moving", 0, "02_isic", n_labels=5, route=get_route("agnostic"))
    sup, _ = label_sets(moving.data("moving").train, 5, 0, settings(moving.profile))
    units = {c.case_id for c in moving.data("moving").test}
    for stage, used in zip(PEER_STAGES, (1, len(sup), len(sup))):
        rows = df[df.stage == stage]
        assert set(rows.case_id) == units and len(rows) == len(units), stage
        assert (rows.labels_used == used).all() and (rows.n_labels == 5).all() and rows.dice.between(0, 1).all()
        assert (rows.stage_index < -2).all(), "not an ablation stage"
    assert df[df.stage == "selfprompt"].dice.mean() > 0.5
    table = comparison_table(df)
    assert table.method.tolist()[0] == "deployed route" and len(table) == 6
    assert table.set_index("method").loc["PerSAM, 1 support", "labels used"] == 1


@pytest.mark.slow
def test_a_peer_that_wins_cross_validation_on_the_labels_is_deployed(moving):
    from frozenseg.experiments.domain import run_domain
    from frozenseg.experiments.route_choice import CV

    cands = [get_route("cxr"), get_route("selfprompt")]       # the static few-shot box cannot follow the target
    df, info = run_domain(moving, "moving", 0, "05_cxr", n_labels=5, candidates=cands, use_cache=False)
    assert info["choice"]["how"] == CV and info["choice"]["name"] == "selfprompt"
    dep, peer = (df[df.stage == s].set_index("case_id").dice for s in ("deployed", "selfprompt"))
    assert (df[df.stage == "deployed"].route == "selfprompt").all()
    pd.testing.assert_series_equal(dep, peer, check_names=False)


def test_headline_shows_each_peer_with_its_labels(tmp_path, monkeypatch):
    from frozenseg.experiments import baselines_report as B
    from frozenseg.results import save_results

    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    rows = []
    for stage, used, d in (("deployed", 8, 0.8), ("persam_1shot", 1, 0.3), ("persam", 5, 0.4), ("selfprompt", 5, 0.6)):
        for k in range(3):
            rows.append({"notebook": "04_kvasir", "profile": "smoke", "source": "phantom", "model": "litemedsam",
                         "domain": "kvasir", "seed": 0, "case_id": f"c{k}", "method": f"{stage}_n10", "stage": stage,
                         "unit": "case", "n_labels": 10, "labels_used": used, "dice": d})
    save_results(pd.DataFrame(rows), "04_kvasir", "smoke")
    peers = B.peers_per_seed("smoke", ["kvasir", "spleen"])
    assert set(peers.stage) == {"persam_1shot", "persam", "selfprompt"}
    cells = B.peer_cells(peers, "kvasir", 10, "04_kvasir")
    assert cells["PerSAM, 1 support"] == "0.300 (1 label)" and cells[B.PEERS[2].title] == "0.600 (5 labels)"
    assert set(B.peer_cells(peers, "spleen", 10, "03_spleen").values()) == {"–"}
    assert set(B.peer_cells(peers, "cxr", 10, B.PENDING).values()) == {B.PENDING}


def test_gate_audit_cross_checks_only_against_units_where_its_route_was_deployed():
    """Notebook 10 refits a domain's own route; where notebook 04 deployed a peer (chosen on the labels), those rows
    are not the route it audits, so they are not compared."""
    from frozenseg.experiments.gate_validity import agreement

    here = pd.DataFrame({"unit": "case", "seed": 0, "case_id": ["a", "b"], "dice_deployed": [0.8, 0.7]})
    res = pd.DataFrame({"stage": "deployed", "seed": 0, "case_id": ["a", "b"], "dice": [0.8, 0.7], "n_labels": 10,
                        "domain": "kvasir", "route": "kvasir"})
    assert agreement(here, res, route="kvasir") == 0.0
    peer = res.assign(route="selfprompt", dice=[0.5, 0.6])
    assert np.isnan(agreement(here, peer, route="kvasir")) and agreement(here, peer) > 0.1
