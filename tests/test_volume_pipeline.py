"""The spleen volume pipeline on tiny phantom volumes: GT-free at inference, prior slice range, keep-best,
clear errors, and the results schema."""
import numpy as np
import pytest

from frozenseg.data import DomainData, Volume
from frozenseg.data.phantoms import make_phantom_volume
from frozenseg.errors import ConfigError, DataError
from frozenseg.pipeline.frame import Candidate
from frozenseg.pipeline.volume import (STAGES, SliceFrame, SoftTissueGate, VolumePipeline, VolumePrior, VolumeSkill,
                                       VolumeState, run_spleen)

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
                                       volumes={test.volume_id: test, "blind": blind})
    df, info = run_spleen(study, 0, params={"range_margin": 0})
    return df, info, test


def test_prior_gives_the_slice_range_and_boxes(tiny):
    train, test = tiny
    prior = VolumePrior.fit([c for v in train for c in slices(v)])
    lo = min(v.foreground_slices()[0] for v in train)
    hi = max(v.foreground_slices()[-1] for v in train)
    assert prior.slice_range(DEPTH, margin=0) == list(range(lo, hi + 1))
    assert prior.slice_range(DEPTH, margin=1)[0] == max(lo - 1, 0)
    assert prior.n_volumes == 3 and 0 < prior.length[0] <= prior.length[1] <= 1
    for z in prior.slice_range(DEPTH):
        b = prior.box_at(z, DEPTH, (SIZE, SIZE))
        assert 0 <= b[0] < b[2] <= SIZE - 1 and 0 <= b[1] < b[3] <= SIZE - 1
    # the range of another depth scales with it (normalised z)
    assert prior.slice_range(2 * DEPTH - 1, margin=0)[0] == pytest.approx(2 * lo, abs=1)


def test_empty_support_and_missing_depth_are_clear_errors(tiny):
    train, _ = tiny
    with pytest.raises(DataError, match="empty"):
        VolumePrior.fit([])
    with pytest.raises(DataError, match="empty"):
        VolumePipeline(model=None).fit([c for v in train for c in slices(v)], support=[])
    c = slices(train[0])[0]
    c.meta = {}
    with pytest.raises(ConfigError, match="depth"):
        VolumePrior.fit([c])
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
    prior = VolumePrior.fit([c for v in train for c in slices(v)])
    gate = SoftTissueGate()
    frames, cur = {}, {}
    for z in test.foreground_slices()[2:5]:
        c = test.slice_case(z)
        frames[z] = SliceFrame(image=c.image, embedding=None, model=None, prior=prior.domain, gate=gate, z=z,
                               vprior=prior)
        cur[z] = Candidate(mask=c.mask.copy(), origin="given")
    state = VolumeState(frames, dict(cur), DEPTH, prior, VolumePipeline(None).params)
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
    assert tr.slices == info["pipeline"].prior.slice_range(DEPTH, margin=0)


def test_volume_genome_fits_on_train_volumes_leaving_each_out_and_is_cached(tiny, litemedsam, monkeypatch):
    import torch

    from frozenseg.pipeline import volume as V
    from frozenseg.study import setup

    torch.set_num_threads(1)
    train, test = tiny
    study = setup(profile="smoke", seeds=[0], domains=["spleen"], verbose=False)
    study.__dict__["model"] = litemedsam
    study._data["spleen"] = DomainData(domain="spleen", source="phantom", train=[c for v in train for c in slices(v)],
                                       test=slices(test), volumes={test.volume_id: test},
                                       train_volumes={v.volume_id: v for v in train})
    fits = []
    real_fit = V.VolumePipeline.fit

    def spy(self, train_slices, support=None, support_embeddings=None):
        fits.append(({c.volume_id for c in train_slices}, {c.volume_id for c in support or []}))
        return real_fit(self, train_slices, support, support_embeddings)

    monkeypatch.setattr(V.VolumePipeline, "fit", spy)
    vp = V.fit_volume_pipeline(study, 0, params={"range_margin": 0})
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
    again = V.fit_volume_pipeline(study, 0, params={"range_margin": 0})
    assert again.genome["cached"] and again.genome["params"] == rec["params"]


def test_volume_genome_bad_input(tiny):
    train, _ = tiny
    with pytest.raises(ConfigError, match="unknown"):
        from frozenseg.pipeline.volume import fit_volume_genome
        fit_volume_genome(None, train[:1], [], [], [], None, spec={"no_such": (0, 1)})
    with pytest.raises(DataError, match="two or more"):
        fit_volume_genome(None, train[:1], slices(train[0]), [], [], None)
