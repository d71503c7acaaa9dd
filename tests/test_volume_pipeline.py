"""The spleen volume pipeline on tiny phantom volumes: GT-free at inference, prior slice range, keep-best,
clear errors, and the results schema."""
import numpy as np
import pytest

from frozenseg.data import DomainData, Volume
from frozenseg.data.phantoms import make_phantom_volume
from frozenseg.errors import ConfigError, DataError
from frozenseg.experiments import baselines as sweep
from frozenseg.experiments import spleen as S
from frozenseg.experiments.spleen import run_spleen
from frozenseg.pipeline import volume as V
from frozenseg.pipeline.frame import Candidate
from frozenseg.pipeline.gates import Gate
from frozenseg.pipeline.volume import (DEFAULT_GATE, STAGES, SliceFrame, VolumePipeline, VolumePrior, VolumeSkill,
                                       VolumeState)

SIZE, DEPTH = 64, 8


def slices(vol):
    return [vol.slice_case(z) for z in vol.foreground_slices()]


@pytest.fixture(scope="module")
def tiny():
    """Three labelled train volumes and one test volume, 64 px x 10 slices."""
    train = [make_phantom_volume(i, SIZE, DEPTH, 0) for i in range(3)]
    test = make_phantom_volume(7, SIZE, DEPTH, 0)
    return train, test


@pytest.fixture(scope="module")
def tiny_run(tiny, litemedsam):
    """run_spleen on the tiny data, with a copy of the test volume whose mask is zeroed."""
    import torch

    from frozenseg.study import setup

    torch.set_num_threads(1)
    train, test = tiny
    blind = Volume(volume_id="blind", domain="spleen", image=test.image.copy(), mask=np.zeros_like(test.mask),
                   spacing=test.spacing)
    train_cases = [c for v in train for c in slices(v)]
    study = setup(profile="smoke", seeds=[0], domains=["spleen"], verbose=False)
    study.__dict__["model"] = litemedsam
    study._data["spleen"] = DomainData(domain="spleen", source="phantom", train=train_cases, test=slices(test),
                                       volumes={test.volume_id: test, "blind": blind},
                                       train_volumes={v.volume_id: v for v in train})
    df, info = run_spleen(study, 0, params={"range_margin": 0})
    return df, info, test


def fit_prior(train):
    return VolumePrior.fit([c for v in train for c in slices(v)], {v.volume_id: v for v in train})


def test_prior_gives_the_slice_range_and_boxes(tiny):
    train, test = tiny
    prior = fit_prior(train)
    body = V.BodyFrame.of(test.image, test.spacing[2])
    assert (body.z0, body.z1) == (0, DEPTH - 1)                  # the phantom's body fills every slice
    lo = min(v.foreground_slices()[0] for v in train)
    hi = max(v.foreground_slices()[-1] for v in train)
    assert prior.slice_range(body, margin=0) == list(range(lo, hi + 1))
    assert prior.slice_range(body, margin=1)[0] == max(lo - 1, 0)
    mm = [(v.foreground_slices()[-1] - v.foreground_slices()[0]) * v.spacing[2] for v in train]
    assert prior.n_volumes == 3 and prior.length == pytest.approx((min(mm), max(mm)))     # lengths in mm
    for z in prior.slice_range(body):
        b = prior.box_at(z, body)
        assert 0 <= b[0] < b[2] <= SIZE - 1 and 0 <= b[1] < b[3] <= SIZE - 1
    # the range of a volume twice as deep scales with its body (positions along the body's slices)
    deep = V.BodyFrame.of(np.repeat(test.image, 2, axis=2)[:, :, :2 * DEPTH - 1], test.spacing[2] / 2)
    assert prior.slice_range(deep, margin=0)[0] == pytest.approx(2 * lo, abs=1)


def test_empty_support_and_missing_depth_are_clear_errors(tiny):
    train, _ = tiny
    frames = {v.volume_id: v for v in train}
    with pytest.raises(DataError, match="empty"):
        VolumePrior.fit([], frames)
    with pytest.raises(DataError, match="empty"):
        VolumePipeline(model=None).fit([c for v in train for c in slices(v)], support=[], volumes=frames)
    with pytest.raises(ConfigError, match="body frame"):
        VolumePrior.fit(slices(train[0]), {})
    c = slices(train[0])[0]
    c.meta = {}
    with pytest.raises(ConfigError, match="depth"):
        VolumePrior.fit([c], frames)
    with pytest.raises(ConfigError, match="unknown"):
        VolumePipeline(model=None, params={"no_such": 1})


class Worse(VolumeSkill):
    """Proposes a 2x2 blob in the image corner: it can never raise the gate."""

    name = "worse"

    def propose(self, state, z):
        m = np.zeros(state.frames[z].shape, bool)
        m[:2, :2] = True
        return [Candidate(mask=m, origin="corner"), Candidate(mask=state.cur[z].mask.copy(), origin="same")]


def test_skill_that_cannot_improve_the_gate_is_rejected(tiny):
    train, test = tiny
    prior = fit_prior(train)
    body = V.BodyFrame.of(test.image, test.spacing[2])
    gate = Gate(dict(DEFAULT_GATE))
    frames, cur = {}, {}
    for z in test.foreground_slices()[2:5]:
        c = test.slice_case(z)
        frames[z] = SliceFrame(image=c.image, embedding=None, model=None, prior=prior.domain, gate=gate, z=z,
                               vprior=prior, body=body)
        cur[z] = Candidate(mask=c.mask.copy(), origin="given")
    state = VolumeState(frames, dict(cur), DEPTH, prior, VolumePipeline(None).params, body=body)
    fired, accepted = Worse()(state)
    assert fired == sorted(frames) and accepted == []
    assert all(state.cur[z] is cur[z] for z in frames)


def test_run_spleen_schema_and_stages(tiny_run):
    df, info, test = tiny_run
    for col in ("domain", "seed", "case_id", "volume_id", "unit", "stage", "stage_index", "dice", "iou", "hd95",
                "fired_slices", "accepted_slices", "flag", "localizer", "source", "method", "notebook", "profile",
                "model"):
        assert col in df.columns, col
    real = df[df.volume_id == test.volume_id]
    assert list(real.stage) == [*STAGES, "deployed", "naive", "oracle"]
    assert (real.unit == "volume").all() and (real.domain == "spleen").all()
    assert real.dice.between(0, 1).all() and not real.dice.isna().any()
    last, dep = real[real.stage == STAGES[-1]].iloc[0], real[real.stage == "deployed"].iloc[0]
    assert dep.dice == last.dice and dep.iou == last.iou
    assert real[real.stage == "oracle"].dice.iloc[0] > 0.5
    assert not df.duplicated(["volume_id", "stage"]).any()
    pred = info["volumes"][test.volume_id]
    assert pred.shape == test.mask.shape and pred.dtype == bool
    from frozenseg.results import save_results

    save_results(df, "03_spleen_test", "smoke")


def test_prediction_never_reads_the_test_mask(tiny_run):
    df, info, test = tiny_run
    np.testing.assert_array_equal(info["volumes"]["blind"], info["volumes"][test.volume_id])
    a = df[df.volume_id == "blind"].set_index("stage")
    b = df[df.volume_id == test.volume_id].set_index("stage")
    assert (a.fired_slices.loc[list(STAGES)] == b.fired_slices.loc[list(STAGES)]).all()
    assert (a.accepted_slices.loc[list(STAGES)] == b.accepted_slices.loc[list(STAGES)]).all()
    # slices processed come from the prior, not from the test mask
    tr = info["traces"][test.volume_id]
    assert tr.slices == info["pipeline"].prior.slice_range(V.BodyFrame.of(test.image), margin=0)


def test_volume_genome_fits_on_train_volumes_leaving_each_out_and_is_cached(tiny, litemedsam, monkeypatch):
    import torch

    from frozenseg.study import setup

    torch.set_num_threads(1)
    train, test = tiny
    from frozenseg.experiments import baselines

    # enough organ-free slices that the genome's volume gets some of the networks' draw (round(10 x 0.6) of 9)
    monkeypatch.setitem(baselines.DEFAULTS, "bg_ratio", 0.6)
    study = setup(profile="smoke", seeds=[0], domains=["spleen"], verbose=False)
    study.__dict__["model"] = litemedsam
    study._data["spleen"] = DomainData(domain="spleen", source="phantom", train=[c for v in train for c in slices(v)],
                                       test=slices(test), volumes={test.volume_id: test},
                                       train_volumes={v.volume_id: v for v in train},
                                       meta={"train_volumes": [v.volume_id for v in train]})
    fits = []
    real_fit = V.VolumePipeline.fit

    def spy(self, train_slices, support=None, support_embeddings=None, volumes=None):
        fits.append(({c.volume_id for c in train_slices}, {c.volume_id for c in support or []}))
        return real_fit(self, train_slices, support, support_embeddings, volumes)

    monkeypatch.setattr(V.VolumePipeline, "fit", spy)
    vp = S.fit_volume_pipeline(study, 0, params={"range_margin": 0})
    rec = vp.genome
    assert not rec["cached"] and 1 <= rec["evals"] <= 2 + 2 and rec["fit_dice"] >= rec["start_dice"]
    assert set(rec["params"]) == set(V.VOLUME_GENOME)
    assert all(V.VOLUME_GENOME[k][0] <= v <= V.VOLUME_GENOME[k][1] and vp.params[k] == v
               for k, v in rec["params"].items())
    assert len(rec["volumes"]) == 1 and rec["volumes"][0] in {v.volume_id for v in train}
    assert test.volume_id not in str(rec)
    # the deployed pipeline's prior saw every train volume; the genome volume's pipeline saw all but that one
    held = rec["volumes"][0]
    assert fits[0][0] == {v.volume_id for v in train}
    assert held not in fits[1][0] and held not in fits[1][1] and len(fits[1][0]) == len(train) - 1
    table = vp.describe().set_index("what")
    assert table.loc["box_margin", "fit"].startswith("genome [0, 0.3]") and table.loc["min_gain", "fit"] == "fixed"
    # the genome scored the organ-free slices the networks train on (the same seeded draw), counted as labels used
    bg_ratio = sweep.baseline_params(study.profile)["bg_ratio"]
    cases, n_bg = sweep.labelled_cases(study, "spleen", vp.n_labels, 0, bg_ratio)
    net_bg = {c.case_id for c in cases if not c.mask.any()}
    assert n_bg == len(net_bg) == 6
    assert vp.background and set(vp.background) == {c for c in net_bg if c.startswith(held + "_")}
    assert set(vp.labels) == {c.case_id for c in cases if c.mask.any()} | set(vp.background)
    assert rec["n_background"] == len(vp.background) and "organ-free" in rec["objective"]
    again = S.fit_volume_pipeline(study, 0, params={"range_margin": 0})
    assert again.genome["cached"] and again.genome["params"] == rec["params"]


def test_volume_genome_bad_input(tiny):
    train, _ = tiny
    with pytest.raises(ConfigError, match="unknown"):
        V.fit_volume_genome(None, train[:1], [], [], [], None, spec={"no_such": (0, 1)})
    with pytest.raises(DataError, match="two or more"):
        V.fit_volume_genome(None, train[:1], slices(train[0]), [], [], None)


class _Planted:
    """A trace whose deployed volume is a given prediction."""

    def __init__(self, pred):
        self.pred = pred

    def volume(self, shape, stage=None):
        return self.pred


def test_genome_objective_penalises_false_positives_on_organ_free_slices(tiny, monkeypatch):
    """A planted pipeline is perfect on the organ and puts a blob that grows with box_margin on every organ-free
    slice: the labelled-slices-only objective cannot see it; with the networks' organ-free slices the fit shrinks
    the margin."""
    from frozenseg import evaluation

    train, _ = tiny
    a, b = train[0], train[1]
    organ = a.foreground_slices()
    free = [z for z in range(DEPTH) if z not in organ]

    def run(self, image, embed, embed_crop=None, slices=None, frame_cache=None, spacing=None):
        pred = a.mask.copy()
        side = int(round(60 * self.params["box_margin"]))
        pred[5:5 + side, 5:5 + side, free] = True
        return _Planted(pred)

    calls = []
    real = evaluation.score_volume
    monkeypatch.setattr(evaluation, "score_volume", lambda *x, **k: calls.append(1) or real(*x, **k))
    monkeypatch.setattr(V.VolumePipeline, "run", run)
    kw = dict(spec={"box_margin": (0.0, 0.3)}, skills=("within_volume_prior",), budget=12,
              labelled={a.volume_id: organ[:3]}, train_volumes={b.volume_id: b})
    args = (None, [a], slices(a) + slices(b), [], [], lambda cases: [None] * len(cases))
    old = V.fit_volume_genome(*args, **kw)
    assert old["start_dice"] == old["fit_dice"] == 1.0 and old["n_background"] == 0          # blind to it
    new = V.fit_volume_genome(*args, background={a.volume_id: free[:2]}, **kw)
    assert new["start_dice"] < new["fit_dice"] and new["params"]["box_margin"] < V.DEFAULT_PARAMS["box_margin"]
    assert new["n_background"] == 2 and calls                     # scored through the evaluation core
    with pytest.raises(DataError, match="organ"):
        V.fit_volume_genome(*args, background={a.volume_id: organ[:1]}, **kw)


def test_negative_test_volume_scores_by_the_empty_rule(tiny_run):
    df, info, test = tiny_run
    neg, pos = df[df.volume_id == "blind"].set_index("stage"), df[df.volume_id == test.volume_id].set_index("stage")
    assert neg.negative.all() and not pos.negative.any() and (df.hd95_unit == "mm").all()
    assert neg.loc["oracle", "dice"] == 1.0 and neg.loc["oracle", "hd95"] == 0.0       # no box, nothing predicted
    predicted = bool(info["volumes"]["blind"].any())
    assert neg.loc["deployed", "dice"] == (0.0 if predicted else 1.0)
    assert np.isnan(neg.loc["deployed", "hd95"]) == predicted


def _planted_rows():
    """Two seeds x two volumes of localize / deployed / naive / oracle rows at one budget."""
    import pandas as pd

    dice = {("localize", 0): (0.4, 0.6), ("localize", 1): (0.6, 0.8), ("deployed", 0): (0.4, 0.6),
            ("deployed", 1): (0.5, 0.7), ("naive", 0): (0.1, 0.3), ("naive", 1): (0.1, 0.3),
            ("oracle", 0): (0.7, 0.9), ("oracle", 1): (0.7, 0.9)}
    index = {"localize": 0, "deployed": 5, "naive": -1, "oracle": -2}
    rows = []
    for (stage, seed), ds in dice.items():
        for v, d in zip(("v0", "v1"), ds):
            rows.append({"domain": "spleen", "n_labels": 10, "unit": "volume", "case_id": v, "volume_id": v,
                         "seed": seed, "stage": stage, "stage_index": index[stage], "dice": d,
                         "hd95": float("nan") if (v, seed) == ("v0", 0) else 2.0 + seed, "hd95_unit": "mm",
                         "fired_slices": 0, "accepted_slices": 0, "n_slices": 4})
    return pd.DataFrame(rows)


def test_volume_tables_use_the_evaluation_core(monkeypatch):
    """Across seeds: sd with n - 1 of the per-seed means; HD95's median says how many volumes had no boundary."""
    from frozenseg import evaluation
    from frozenseg.experiments.spleen import volume_ablation_table, volume_gap_table

    calls = []
    real = evaluation.seed_cell
    monkeypatch.setattr(evaluation, "seed_cell", lambda *a, **k: calls.append(1) or real(*a, **k))
    ab = volume_ablation_table(_planted_rows()).set_index("stage")
    assert ab.loc["localize", "volume Dice"] == "0.600 ± 0.141"          # per-seed means 0.5, 0.7 (ddof 0: 0.100)
    assert ab.loc["deployed", "HD95"] == "median 3.0 mm (1 of 4 without a boundary)"
    gap = volume_gap_table(_planted_rows()).iloc[0]
    assert gap["deployed"] == "0.550 ± 0.071" and gap["oracle"] == "0.800 ± 0.000"
    assert gap["gap closed"] == "0.583 ± 0.118"                           # per seed 0.5, 0.667 (ddof 0: 0.083)
    assert calls


# ---------------------------------------------------------------- one keep-best rule, one gate, one genome fit

def _cxr_pipeline(model):
    from frozenseg.data.phantoms import make_phantom_case
    from frozenseg.pipeline import Pipeline, get_route

    cases = [make_phantom_case("cxr", i, 96, 0) for i in range(4)]
    embs = [model.encode(c.image) for c in cases]
    return Pipeline(get_route("cxr"), model).fit(cases[:3], embs[:3]), cases, embs


def test_one_keep_best_rule_decides_for_the_2d_and_the_volume_pipeline(tiny, litemedsam, monkeypatch):
    """Pipeline.run and the volume skills both call gates.keep_best: a spy sees both, and a rule that never keeps
    makes both keep nothing."""
    from frozenseg.pipeline import gates

    calls, real = [], gates.keep_best
    monkeypatch.setattr(gates, "keep_best", lambda *a, **k: calls.append(type(a[0]).__name__) or real(*a, **k))
    pipe, cases, embs = _cxr_pipeline(litemedsam)
    tr = pipe.run(cases[3].image, embs[3])
    n2d = len(calls)
    assert n2d == sum(s.fired for s in tr.stages[1:]) >= 1
    train, test = tiny
    prior = fit_prior(train)
    body = V.BodyFrame.of(test.image, test.spacing[2])
    vp = VolumePipeline(None)
    frames, cur = {}, {}
    for z in test.foreground_slices()[2:5]:
        c = test.slice_case(z)
        frames[z] = SliceFrame(image=c.image, embedding=None, model=None, prior=prior.domain, gate=vp.gate, z=z,
                               vprior=prior, body=body)
        cur[z] = Candidate(mask=c.mask.copy(), origin="given")
    state = VolumeState(frames, dict(cur), DEPTH, prior, vp.params, body=body)
    Worse()(state)
    assert len(calls) == n2d + len(frames)

    class Better(VolumeSkill):
        name = "better"

        def propose(self, state, z):
            return [Candidate(mask=test.mask[:, :, z].copy(), origin="truth")]

    state = VolumeState(frames, {z: Candidate(mask=np.roll(m.mask, 9, 1), origin="off") for z, m in cur.items()},
                        DEPTH, prior, vp.params, body=body)
    assert Better()(state)[1], "the truth beats a shifted mask under the gate"
    monkeypatch.setattr(gates, "keep_best", lambda current, proposals, gate_of, min_gain: (current, False, []))
    state = VolumeState(frames, {z: Candidate(mask=np.roll(m.mask, 9, 1), origin="off") for z, m in cur.items()},
                        DEPTH, prior, vp.params, body=body)
    assert Better()(state)[1] == []
    assert not any(s.accepted for s in pipe.run(cases[3].image, embs[3]).stages[1:])


def test_one_gate_class_takes_the_volume_cues_when_weighted_and_supplied(tiny):
    """SoftTissueGate is gone: Gate weighs the tissue cue when the frame carries a volume prior and the trajectory
    cue when it carries an expectation; on a 2D frame they are absent, so a weight on them changes nothing."""
    from frozenseg.pipeline import gates
    from frozenseg.pipeline.frame import Frame

    assert not hasattr(V, "SoftTissueGate") and not hasattr(gates, "SoftTissueGate")
    assert type(VolumePipeline(None).gate) is Gate and set(gates.OPTIONAL_CUES) == {"tissue", "trajectory"}
    train, test = tiny
    prior = fit_prior(train)
    z = test.foreground_slices()[3]
    c = test.slice_case(z)
    gate = Gate(dict(DEFAULT_GATE))
    fr = SliceFrame(image=c.image, embedding=None, model=None, prior=prior.domain, gate=gate, z=z, vprior=prior,
                    body=V.BodyFrame.of(test.image))
    cues = gate.cues(fr, c.mask, 0.9)
    assert "tissue" in cues and "trajectory" not in cues and 0 < cues["tissue"] <= 1
    ys, xs = np.nonzero(c.mask)
    fr.expect = {"cx": float(xs.mean()), "cy": float(ys.mean()), "area": float(c.mask.sum())}
    cues = gate.cues(fr, c.mask, 0.9)
    assert cues["trajectory"] == pytest.approx(1.0)
    w = {k: v for k, v in DEFAULT_GATE.items()}
    assert gate.score(fr, c.mask, 0.9) == pytest.approx(sum(w[k] * cues[k] for k in w) / sum(w.values()))
    flat = Frame(image=c.image, embedding=None, model=None, prior=prior.domain)
    image_only = {k: v for k, v in DEFAULT_GATE.items() if k in gates.CUES}
    assert set(gate.cues(flat, c.mask, 0.9)) == set(gates.CUES)
    assert gate.score(flat, c.mask, 0.9) == pytest.approx(Gate(image_only).score(flat, c.mask, 0.9))
    with pytest.raises(ConfigError, match="shine"):
        Gate({"tissue": 1.0, "shine": 1.0})


def test_one_powell_fit_serves_the_2d_and_the_volume_genome(tiny, litemedsam, monkeypatch):
    """fit_genome and fit_volume_genome both run genome.fit_powell (a spy sees the 2D route's spec and the volume's)."""
    from frozenseg.pipeline import fit_genome, genome

    specs, real = [], genome.fit_powell
    monkeypatch.setattr(genome, "fit_powell", lambda objective, spec, *a, **k: specs.append(set(spec))
                        or real(objective, spec, *a, **k))
    pipe, cases, embs = _cxr_pipeline(litemedsam)
    rec = fit_genome(pipe, cases[:3], embs[:3], budget=2)
    assert specs == [set(pipe.route.genome)] and rec["evals"] >= 1
    train, _ = tiny
    a, b = train[0], train[1]

    def run(self, image, embed, embed_crop=None, slices=None, frame_cache=None, spacing=None):
        return _Planted(a.mask.copy())

    monkeypatch.setattr(V.VolumePipeline, "run", run)
    rec = V.fit_volume_genome(None, [a], slices(a) + slices(b), [], [], lambda cases: [None] * len(cases),
                              spec={"box_margin": (0.0, 0.3)}, skills=("within_volume_prior",), budget=2,
                              train_volumes={b.volume_id: b})
    assert specs[1:] == [{"box_margin"}] and rec["fit_dice"] == 1.0


def test_volume_genome_key_holds_the_volumes_sizes_and_content(monkeypatch):
    """The same volume and slice ids at another size are another genome fit (a cache miss)."""
    from frozenseg.pipeline import genome

    keys = []
    monkeypatch.setattr(genome, "fit_powell", lambda objective, spec, start, budget, cache=None, **k:
                        keys.append(genome.cache_key(cache)) or {"params": {}})

    class Model:
        cache_id = "stand-in"

    for size in (48, 64, 48):
        vols = [make_phantom_volume(i, size, 12, 0) for i in range(2)]
        V.fit_volume_genome(Model(), vols[:1], slices(vols[0]) + slices(vols[1]), slices(vols[1])[:1], [None],
                            lambda cases: [None] * len(cases), budget=2, cache=True,
                            train_volumes={vols[1].volume_id: vols[1]})
    assert keys[0] == keys[2] != keys[1]
