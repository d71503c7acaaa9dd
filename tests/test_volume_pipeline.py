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
