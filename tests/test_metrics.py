"""Metrics and boxes."""
import numpy as np
import pytest

from frozenseg import boxes
from frozenseg.evaluation import metrics
from frozenseg.errors import DataError


def _square(h=40, w=40, y=10, x=10, s=10):
    m = np.zeros((h, w), bool)
    m[y:y + s, x:x + s] = True
    return m


def test_dice_iou_known_values():
    a, b = _square(), _square(x=15)
    assert metrics.dice(a, a) == 1.0 and metrics.iou(a, a) == 1.0
    assert metrics.dice(a, b) == pytest.approx(0.5)
    assert metrics.iou(a, b) == pytest.approx(50 / 150)
    assert metrics.dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert metrics.dice(a, np.zeros_like(a)) == 0.0


def test_hd95_in_pixels_and_mm():
    a, b = _square(), _square(y=13)
    assert metrics.hd95(a, a) == 0.0
    assert metrics.hd95(a, b) == pytest.approx(3.0)
    assert metrics.hd95(a, b, spacing=(2.0, 1.0)) == pytest.approx(6.0)
    assert np.isnan(metrics.hd95(a, np.zeros_like(a)))
    with pytest.raises(DataError, match="spacing"):
        metrics.hd95(a, b, spacing=(1.0, 1.0, 1.0))


def _blob(rng, shape):
    """A random smooth blob (thresholded smoothed noise), sometimes touching the image border."""
    from scipy.ndimage import gaussian_filter
    field = gaussian_filter(rng.standard_normal(shape), sigma=3)
    return field > np.quantile(field, rng.uniform(0.6, 0.95))


@pytest.mark.parametrize("ndim", [2, 3])
def test_hd95_matches_monai(ndim):
    """The scipy HD95 equals MONAI's compute_hausdorff_distance (the reference) with and without spacing."""
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(ndim)
    shape = (48, 40) if ndim == 2 else (24, 20, 12)
    for trial in range(12):
        p, g = _blob(rng, shape), _blob(rng, shape)
        spacing = None if trial % 2 == 0 else tuple(rng.uniform(0.5, 3.0, ndim))
        ref = monai_metrics.compute_hausdorff_distance(
            torch.from_numpy(p)[None, None], torch.from_numpy(g)[None, None], include_background=True,
            percentile=95, spacing=None if spacing is None else list(spacing))
        assert metrics.hd95(p, g, spacing) == pytest.approx(float(ref.reshape(-1)[0]), rel=1e-5, abs=1e-5)


def test_volume_scores_are_3d_not_slice_averages():
    gt = np.zeros((20, 20, 4), bool)
    gt[2:18, 2:18, 1] = True          # a big slice
    gt[9:11, 9:11, 2] = True          # a tiny tip slice
    pred = gt.copy()
    pred[:, :, 2] = False             # the tip is missed
    vol = metrics.score_volume(pred, gt, spacing=(1, 1, 5))["dice"]
    per_slice = np.mean([metrics.dice(pred[:, :, z], gt[:, :, z]) for z in (1, 2)])
    assert vol == pytest.approx(2 * 256 / (256 + 260))
    assert per_slice == pytest.approx(0.5) and vol > 0.98
    assembled = metrics.assemble_volume(gt.shape, {1: gt[:, :, 1]})
    assert np.array_equal(assembled, pred)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(DataError, match="resize the prediction"):
        metrics.dice(np.zeros((4, 4)), np.zeros((4, 5)))


def test_boxes():
    m = _square()
    b = boxes.mask_to_box(m)
    assert list(b) == [10, 10, 19, 19]
    assert boxes.box_iou(b, b) == 1.0
    loose = boxes.loosen_box(b, 2.0, m.shape)
    assert boxes.box_iou(loose, b) == pytest.approx(0.25, abs=0.03)
    rng = np.random.default_rng(0)
    j = boxes.jitter_box(b, 0.2, rng, m.shape)
    assert j[0] <= j[2] and j[1] <= j[3] and 0.3 < boxes.box_iou(j, b) < 1.0
    assert np.array_equal(boxes.jitter_box(b, 0.2, np.random.default_rng(0), m.shape), j)
    clipped = boxes.loosen_box(np.array([0, 0, 39, 39.0]), 3.0, m.shape)
    assert list(clipped) == [0, 0, 39, 39]
    with pytest.raises(DataError, match="empty"):
        boxes.mask_to_box(np.zeros((5, 5), bool), "case_7")
