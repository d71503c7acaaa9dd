"""The spleen volume prior in the body frame, on small synthetic files in the real samples' on-disk formats (NIfTI
pairs in images/ and masks/, PNG pairs): a prior fit on one field of view transfers to another, the body is found
on CT and on MR intensities, leave one scan out never trains on the test scan, and the new sample folders load."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from frozenseg.boxes import box_iou, mask_to_box
from frozenseg.data import loaders as L
from frozenseg.data.types import Volume
from frozenseg.pipeline.volume import BodyFrame, VolumePrior

AIR, BODY, ORGAN = -1000.0, 40.0, 120.0


def synthetic_scan(shape, spacing_mm, body_mm, body_centre, organ_z_mm, mr=False, seed=0):
    """(image, label): an elliptic body of ``body_mm`` (width, height) mm centred at ``body_centre`` (fractions of
    the image) in every slice, and an ellipsoid organ in the body's left-posterior quarter spanning ``organ_z_mm``
    (mm from the first slice). CT values in HU, or MR-like intensities normalised to [0, 1] (``mr``)."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    sx, sy, sz = spacing_mm
    x = (np.arange(nx) - body_centre[0] * nx) * sx          # mm from the body's centre
    y = (np.arange(ny) - body_centre[1] * ny) * sy
    z = np.arange(nz) * sz
    xx, yy, zz = np.meshgrid(x, y, z, indexing="ij")
    bw, bh = body_mm
    body = (xx / (bw / 2)) ** 2 + (yy / (bh / 2)) ** 2 <= 1
    z0, z1 = organ_z_mm
    organ = (((xx + 0.25 * bw) / (0.12 * bw)) ** 2 + ((yy + 0.2 * bh) / (0.15 * bh)) ** 2
             + ((zz - (z0 + z1) / 2) / ((z1 - z0) / 2)) ** 2 <= 1) & body
    if mr:
        img = np.where(body, 0.3, 0.01) + np.where(organ, 0.4, 0.0) + rng.normal(0, 0.01, shape)
    else:
        img = np.where(body, BODY, AIR) + np.where(organ, ORGAN - BODY, 0.0) + rng.normal(0, 5, shape)
    return img.astype(np.float32), organ.astype(np.uint8)


def write_folder(root, scans: dict):
    """images/<id>.nii.gz and masks/<id>.nii.gz with the scan's spacing in the affine (the samples' layout)."""
    import nibabel as nib

    for vid, (img, lab, spacing) in scans.items():
        for sub, arr in (("images", img), ("masks", lab)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr, np.diag([*spacing, 1.0])), str(root / sub / f"{vid}.nii.gz"))
    return root


def two_fields_of_view(tmp_path):
    """The same body and organ in mm, scanned twice: a tight field of view at coarse pixels and thick slices, and a
    wide one (the body off centre, a third of the image wide) at fine pixels and thin slices."""
    a = synthetic_scan((64, 56, 32), (6.0, 6.0, 5.0), (330, 260), (0.5, 0.5), (50, 110))
    b = synthetic_scan((160, 160, 40), (5.0, 5.0, 4.0), (330, 260), (0.62, 0.4), (50, 110), seed=1)
    root = write_folder(tmp_path / "ct", {"tight": (*a, (6.0, 6.0, 5.0)), "wide": (*b, (5.0, 5.0, 4.0))})
    vols = {v.volume_id: v for v in L.load_folder(root, "spleen", window=(L.CT_LEVEL, L.CT_WIDTH))}
    return vols["tight"], vols["wide"]


def organ_slices(vol):
    return [vol.slice_case(z) for z in vol.foreground_slices()]


def test_the_body_prior_transfers_between_fields_of_view_where_the_raw_prior_does_not(tmp_path):
    tight, wide = two_fields_of_view(tmp_path)
    prior = VolumePrior.fit(organ_slices(tight), {"tight": tight})
    body = BodyFrame.of(wide.image, wide.spacing[2])
    zs = wide.foreground_slices()
    truth = {z: mask_to_box(wide.mask[:, :, z]) for z in zs}
    iou_body = np.mean([box_iou(prior.box_at(z, body), truth[z]) for z in zs])
    # the prior as it was: the mean organ box relative to the image's size, placed at the same relative spot
    h, w = tight.image.shape[:2]
    raw = np.mean([mask_to_box(c.mask) / [w - 1, h - 1, w - 1, h - 1] for c in organ_slices(tight)], 0)
    hw, ww = wide.image.shape[:2]
    iou_raw = np.mean([box_iou(raw * [ww - 1, hw - 1, ww - 1, hw - 1], truth[z]) for z in zs])
    assert iou_body > 0.6 and iou_raw < 0.2, (iou_body, iou_raw)
    # along the slices: every organ slice of the wide scan is processed, and the organ's length is carried in mm
    assert set(zs) <= set(prior.slice_range(body, margin=1))
    length = (zs[-1] - zs[0]) * wide.spacing[2]
    assert prior.length[1] == pytest.approx(length, abs=tight.spacing[2] + wide.spacing[2])


def test_the_body_is_found_on_ct_and_on_mr_intensities(tmp_path):
    ct = synthetic_scan((80, 80, 6), (4.0, 4.0, 5.0), (240, 200), (0.5, 0.5), (5, 25))
    mr = synthetic_scan((80, 80, 6), (4.0, 4.0, 5.0), (240, 200), (0.5, 0.5), (5, 25), mr=True)
    root = write_folder(tmp_path / "f", {"ct": (*ct, (4.0, 4.0, 5.0)), "mr": (*mr, (4.0, 4.0, 5.0))})
    vols = {v.volume_id: v for v in L.load_folder(root, "spleen")}       # both scaled per volume (no HU window)
    for vid, v in vols.items():
        body = BodyFrame.of(v.image, v.spacing[2])
        want = mask_to_box(ct[0][:, :, 3] > -500)                     # the body of the synthetic scan
        assert box_iou(body.boxes[3], want) > 0.9, vid
        assert (body.z0, body.z1) == (0, v.image.shape[2] - 1)


def test_a_volume_prior_without_the_body_frame_of_a_train_volume_is_a_clear_error(tmp_path):
    tight, _ = two_fields_of_view(tmp_path)
    from frozenseg.errors import ConfigError

    with pytest.raises(ConfigError, match="no body frame for train volume"):
        VolumePrior.fit(organ_slices(tight), {})


def _vol(vid, group=None):
    img = np.zeros((8, 8, 3), np.uint8)
    return Volume(vid, "spleen", img, img > 0, (1.0, 1.0, 1.0), "real", {"group": group} if group else {})


def test_leave_one_scan_out_never_trains_on_the_test_scan():
    from frozenseg.errors import DataError
    from frozenseg.experiments.spleen_lovo import lovo_folds

    vols = [_vol("ts_ct_full", "scan_a"), _vol("ts_ct_sm", "scan_a"), _vol("ts_dicom_ct", "scan_b"), _vol("mr_2")]
    folds = {t.volume_id: [v.volume_id for v in train] for t, train in lovo_folds(vols)}
    assert folds == {"mr_2": ["ts_ct_full", "ts_ct_sm", "ts_dicom_ct"], "ts_ct_full": ["mr_2", "ts_dicom_ct"],
                     "ts_ct_sm": ["mr_2", "ts_dicom_ct"], "ts_dicom_ct": ["mr_2", "ts_ct_full", "ts_ct_sm"]}
    with pytest.raises(DataError, match="two or more scans"):
        lovo_folds(vols[:2])


def test_lovo_table_puts_samples_side_by_side_with_intervals_over_scans():
    import pandas as pd

    from frozenseg.experiments.spleen_lovo import lovo_table

    rows = []
    for sample, n, groups in (("CT", 3, ["a", "a", "b"]), ("MR", 6, list("uvwxyz"))):
        for i in range(n):
            for stage, d in (("naive", 0.1), ("deployed", 0.5 + 0.05 * i), ("oracle", 0.9)):
                rows.append({"sample": sample, "volume_id": f"{sample}{i}", "case_id": f"{sample}{i}",
                             "group": groups[i], "train_volumes": "x", "labels_used": 10, "stage": stage,
                             "dice": d, "seed": 0, "unit": "volume"})
    t = lovo_table(pd.DataFrame(rows)).set_index(["sample", "test volume"])
    assert t.loc[("CT", "mean of 3 volumes"), "deployed"] == "0.550 (n = 2, no interval)"     # two scans
    mr = t.loc[("MR", "mean of 6 volumes"), "deployed"]
    assert mr.startswith("0.625 [") and "no interval" not in mr
    assert t.loc[("MR", "MR0"), "oracle - deployed"] == "0.400"


# ----------------------------------------------------------------------------- the new sample folders


def test_spleen_mr_and_cxr_lungs_folders_load_in_their_on_disk_format(tmp_path, monkeypatch):
    """The MR folder (float NIfTI pairs, one patient each) and the chest X-ray folder (PNG pairs) through their
    loaders; with only the chest X-ray folder under the data root the chest X-ray domain is real and says it is
    resized and not the official layout."""
    from frozenseg.config import get_profile
    from frozenseg.data import load_domain, real_available
    from frozenseg.study import setup

    root = tmp_path / "root"
    mr = {f"chaos_mr_{i:02d}": (*synthetic_scan((48, 48, 8), (4.0, 4.0, 7.7), (150, 120), (0.5, 0.5), (10, 40),
                                                mr=True, seed=i), (4.0, 4.0, 7.7)) for i in (1, 3)}
    write_folder(root / "folders" / "spleen_mr", mr)
    for i in range(24):                                   # the sample profile tests on 20 of them
        img = np.full((32, 32), 30, np.uint8)
        img[5:27, 4:14] = img[5:27, 18:28] = 160
        lungs = (img > 100).astype(np.uint8) * 255
        for sub, arr in (("images", img), ("masks", lungs)):
            (root / "folders" / "cxr_lungs" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / "folders" / "cxr_lungs" / sub / f"CHNCXR_{i:04d}_0.png")
    monkeypatch.setenv("FROZENSEG_DATA", str(root))
    vols = L.load_spleen_mr()
    assert [v.volume_id for v in vols] == ["chaos_mr_01", "chaos_mr_03"]
    assert all(v.source == "real" and v.meta["group"] == v.volume_id and v.meta["labels"] == "manual" for v in vols)
    assert all(v.image.dtype == np.uint8 and v.mask.any() for v in vols)
    cases = L.load_cxr_lungs()
    assert len(cases) == 24 and all(c.source == "real" and c.domain == "cxr" for c in cases)
    assert real_available("cxr") and not real_available("spleen")     # the MR sample stands in for no domain
    data = load_domain("cxr", get_profile("sample"), source="real")
    assert data.meta["dataset"] == "cxr_lungs" and len(data.train) + len(data.test) == 24
    study = setup(profile="sample", domains=["cxr"], verbose=False)
    assert study.source_of("cxr") == "real"
    study.data("cxr")
    detail = study.source_detail("cxr")
    assert detail.startswith("real sample (n = 24 images") and "not the official layout" in detail


def test_the_sample_profile_evaluates_the_present_spleen_samples_leave_one_scan_out(tmp_path, monkeypatch):
    from frozenseg.experiments.spleen_lovo import lovo_samples
    from frozenseg.study import setup

    root = tmp_path / "root"
    mr = {f"chaos_mr_{i:02d}": (*synthetic_scan((40, 40, 6), (4.0, 4.0, 7.7), (120, 100), (0.5, 0.5), (8, 30),
                                                mr=True, seed=i), (4.0, 4.0, 7.7)) for i in (1, 2, 5)}
    write_folder(root / "folders" / "spleen_mr", mr)
    monkeypatch.setenv("FROZENSEG_DATA", str(root))
    study = setup(profile="sample", domains=["spleen"], verbose=False)
    samples = lovo_samples(study)
    assert list(samples) == ["spleen_mr"]              # the CT folder is absent here
    s = samples["spleen_mr"]
    assert len(s.volumes) == 3 and s.detail == "real sample (n = 3 volumes of 3 scans)" and "MR" in s.title
    assert lovo_samples(setup(profile="cpu", domains=["spleen"], verbose=False)) == {}


def test_an_organ_cut_by_the_field_of_view_bounds_neither_the_range_nor_the_length(tmp_path):
    """A slab whose every slice holds the organ (like the CT sample's 40 mm scan) says nothing about where the organ
    ends: a prior fit on it alone processes the whole body of a longer scan and caps no length; a scan that shows
    both ends of the organ bounds both."""
    slab = synthetic_scan((48, 48, 8), (6.0, 6.0, 5.0), (240, 200), (0.5, 0.5), (-20, 60))
    whole = synthetic_scan((48, 48, 30), (6.0, 6.0, 5.0), (240, 200), (0.5, 0.5), (50, 110))
    root = write_folder(tmp_path / "ct", {"slab": (*slab, (6.0, 6.0, 5.0)), "whole": (*whole, (6.0, 6.0, 5.0))})
    vols = {v.volume_id: v for v in L.load_folder(root, "spleen", window=(L.CT_LEVEL, L.CT_WIDTH))}
    slab, whole = vols["slab"], vols["whole"]
    assert slab.foreground_slices() == list(range(8))
    body = BodyFrame.of(whole.image, whole.spacing[2])
    cut = VolumePrior.fit(organ_slices(slab), {"slab": slab})
    assert cut.slice_range(body, margin=0) == list(range(30)) and cut.length[1] == float("inf")
    seen = VolumePrior.fit(organ_slices(whole), {"whole": whole})
    zs = whole.foreground_slices()
    assert seen.slice_range(body, margin=0) == zs and seen.length[1] == (zs[-1] - zs[0]) * 5.0
