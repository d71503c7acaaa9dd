"""The CPG route's localization levers (issue 22): pooled kNN label transfer, flip-averaged priors, several prior
peaks as candidate prompts ranked by agreement with the prior."""
import numpy as np
import pytest

from frozenseg.data.phantoms import make_phantom_case
from frozenseg.errors import ConfigError
from frozenseg.localizers import Localization, make_localizer
from frozenseg.localizers.features import ColourFeatures, FeatureMap
from frozenseg.localizers.transfer import knn_prior, pooled_cells, prior_peaks, transfer_prior
from frozenseg.models.base import Prediction
from frozenseg.pipeline.frame import Frame
from frozenseg.pipeline.skills import make_skill


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_knn_transfer_recovers_a_planted_match_that_per_support_topk_misses():
    """Query cell x is exactly one support's foreground (a rare appearance) but resembles the other supports'
    background a little; query cell y resembles the others' foreground and is one support's background. Averaging
    per-support top-k scores ranks y above x; the pooled nearest neighbours put x in the foreground."""
    e = np.eye(6, dtype=np.float32)
    a, c = e[0], e[1]
    y = _unit(0.6 * e[1] + 0.8 * e[2])
    bg0 = _unit(0.95 * y + 0.312 * e[3])
    b = _unit(0.5 * e[0] + 0.866 * e[4])
    supports = [(a[None], bg0[None])] + [(c[None], b[None])] * 4
    query = np.stack([a, y])
    topk = transfer_prior(query, supports, k=1, contrast=True)
    knn = knn_prior(query, *pooled_cells(supports), k=1)
    assert topk[1] > topk[0]                  # per-support top-k prefers the distractor
    assert knn[0] > 0.99 and knn[1] < 0.01    # pooled kNN: x foreground, y background


def test_knn_is_a_cpg_option_and_bad_transfer_names_fail():
    cases = [make_phantom_case("kvasir", i, 96, 0) for i in range(3)]
    loc = make_localizer("cpg", features="colour", transfer="knn", knn=5).fit(cases[:2])
    p = loc.prior(cases[2].image, None)
    assert p.shape == cases[2].mask.shape and 0 <= p.min() and p.max() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="transfer"):
        make_localizer("cpg", features="colour", transfer="nearest").fit(cases[:2])


class _Positional(ColourFeatures):
    """Colour cells plus the cell's column: a space that is not mirror-equivariant."""

    name = "colour_xy"

    def __call__(self, image, emb=None):
        fm = super().__call__(image)
        n = fm.cells.shape[-1]
        x = np.broadcast_to(np.linspace(-2, 2, n, dtype=np.float32), fm.cells.shape[1:])[None]
        f = np.concatenate([fm.cells, x])
        return FeatureMap(f / np.linalg.norm(f, axis=0, keepdims=True), fm.grid)


def test_flip_averaged_prior_is_mirror_symmetric():
    cases = [make_phantom_case("kvasir", i, 96, 0) for i in range(4)]
    img = cases[3].image
    plain = make_localizer("cpg", features=_Positional(cells=16)).fit(cases[:3])
    flip = make_localizer("cpg", features=_Positional(cells=16), flip=True).fit(cases[:3])
    mirrored = img[:, ::-1].copy()
    assert not np.allclose(plain.prior(mirrored, None), plain.prior(img, None)[:, ::-1], atol=1e-3)
    np.testing.assert_allclose(flip.prior(mirrored, None), flip.prior(img, None)[:, ::-1], atol=1e-5)


def _two_blob_prior(shape=(64, 64)):
    p = np.zeros(shape, np.float32)
    p[5:13, 5:13] = 1.0          # small, highest peak
    p[30:60, 25:60] = 0.9        # large region
    return p


def test_prior_peaks_returns_each_region_best_peak_first():
    peaks = prior_peaks(_two_blob_prior(), 0.5, 3)
    assert len(peaks) == 2 and peaks[0][2] == 1.0
    np.testing.assert_array_equal(peaks[0][0], [5, 5, 12, 12])
    np.testing.assert_array_equal(peaks[1][0], [25, 30, 59, 59])


class _BoxModel:
    """A fake promptable model: every multimask output is the filled prompt box."""

    def decode(self, emb, boxes=None, points=None, point_labels=None, mask_input=None, multimask=False):
        x0, y0, x1, y1 = np.asarray(boxes, int)[0]
        m = np.full((3, 64, 64), -1.0, np.float32)
        m[:, y0:y1 + 1, x0:x1 + 1] = 1.0
        return Prediction(logits=m, iou=np.array([0.9, 0.8, 0.7]), low_res=np.zeros((3, 4, 4), np.float32))


def test_peak_select_keeps_the_peak_whose_mask_agrees_with_the_prior():
    """The highest peak is a small spurious blob; decoding the second peak's box agrees better with the prior."""
    prior = _two_blob_prior()
    peaks = prior_peaks(prior, 0.5, 3)
    frame = Frame(image=np.zeros((64, 64, 3), np.uint8), embedding=None, model=_BoxModel(), prior=None)
    frame.localization = Localization(box=peaks[0][0], extra={"prior": prior, "threshold": 0.5,
                                                              "candidate_boxes": [p[0] for p in peaks[1:]]})
    cur = frame.decode_multi(peaks[0][0])[0]
    skill = make_skill("peak_select")
    assert skill.fires(frame, cur, {})
    (best,) = skill.propose(frame, cur, {})
    assert best.mask[45, 40] and not best.mask[8, 8]
    (only,) = make_skill("prior_select").propose(frame, cur, {})      # one peak: the spurious blob stays
    assert only.mask[8, 8]


def test_cpg_localizer_carries_candidate_boxes_for_peaks():
    cases = [make_phantom_case("kvasir", i, 96, 0) for i in range(4)]
    one = make_localizer("cpg", features="colour").fit(cases[:3]).locate(cases[3].image)
    many = make_localizer("cpg", features="colour", peaks=4, threshold=0.3).fit(cases[:3]).locate(cases[3].image)
    assert one.extra["candidate_boxes"] == [] and np.array_equal(one.box, many.box)
    assert all(len(b) == 4 for b in many.extra["candidate_boxes"])
