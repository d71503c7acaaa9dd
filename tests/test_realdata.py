"""Real loaders on the real-data samples (Kvasir-SEG n = 300, ISIC n = 51, spleen CT n = 3, chest X-ray n = 200,
spleen MR n = 10); skipped if absent."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frozenseg import paths
from frozenseg.data import loaders as L
from frozenseg.data.types import Case, Volume

DEFAULT = paths.REPO.parent / "shared" / "realdata"
REALDATA = Path(os.environ["FROZENSEG_REALDATA"]) if os.environ.get("FROZENSEG_REALDATA") else DEFAULT
KVASIR_N, ISIC_N, CXR_LUNGS_N, SPLEEN_MR_N = 300, 51, 200, 10
# Spleen voxels of the silver-standard masks, as documented in folders/spleen_ct/README.txt.
SPLEEN = {"ts_ct_full": ((122, 101, 112), 9668), "ts_ct_sm": ((122, 101, 30), 9452),
          "ts_dicom_ct": ((512, 512, 20), 130634)}


def sample(sub: str) -> Path:
    """Folder of one real sample under REALDATA, or skip saying where it was looked for."""
    folder = REALDATA / sub
    if not folder.is_dir():
        pytest.skip(f"real-data sample {sub!r} not found at {folder} (samples are looked for in $FROZENSEG_REALDATA, "
                    f"else {DEFAULT}); set FROZENSEG_REALDATA to the folder that holds kvasir/, isic2018/, folders/")
    return folder


@pytest.fixture
def realdata(monkeypatch) -> Path:
    """The samples folder, with FROZENSEG_DATA pointing at it for this test only."""
    monkeypatch.setenv("FROZENSEG_DATA", str(REALDATA))
    return REALDATA


def _check_cases(cases: list, n: int, domain: str, max_side: int) -> None:
    """Count, types, dtypes, shapes, size limit and non-empty masks of a loaded real dataset."""
    assert len(cases) == n and len({c.case_id for c in cases}) == n
    for c in cases:
        assert isinstance(c, Case) and c.domain == domain and c.source == "real"
        assert c.image.dtype == np.uint8 and c.image.ndim == 3 and c.image.shape[2] == 3
        assert c.mask.dtype == bool and c.mask.shape == c.image.shape[:2]
        assert max(c.mask.shape) <= max_side
        assert c.mask.any() and not c.meta["empty_mask"], c.case_id
        assert 0 < c.mask.mean() < 1 and c.image.std() > 5


def test_kvasir_sample(realdata):
    sample("kvasir/Kvasir-SEG")
    cases = L.load_kvasir(max_side=256)   # all 300; small, so JPEGs decode at reduced size and the test stays fast
    _check_cases(cases, KVASIR_N, "kvasir", 256)
    assert all(max(c.image.shape[:2]) == 256 for c in cases)
    assert [c.case_id for c in cases] == sorted((c.case_id for c in cases), key=L.natural_key)


def test_kvasir_real_jpeg_mask_noise_is_binarised_at_128(realdata):
    masks = sample("kvasir/Kvasir-SEG") / "masks"
    path = sorted(masks.glob("*.jpg"))[0]
    raw = np.asarray(Image.open(path))
    top = raw.max(axis=2) if raw.ndim == 3 else raw
    assert not np.isin(top, (0, 255)).all()              # a real JPEG mask: values other than 0 and 255
    assert not ((top >= 64) & (top <= 191)).any()        # the noise stays near 0 and 255, so 128 separates it
    got = L.read_mask(path)
    assert (got == (top > 127)).all()
    assert (top > 0).sum() > got.sum()                   # a "> 0" rule would count the noise as polyp


def test_kvasir_sample_cache_is_bit_identical(realdata):
    sample("kvasir/Kvasir-SEG")
    ids = [p.case_id for p in sorted(L.pairs_kvasir(), key=lambda p: L.natural_key(p.case_id))[:8]]
    cached = L.load_kvasir(ids=ids, max_side=1024)
    again = L.load_kvasir(ids=ids, max_side=1024)
    pairs = {p.case_id: p for p in L.pairs_kvasir()}
    for a, b in zip(cached, again):
        fresh = L.make_case(pairs[a.case_id], "kvasir", max_side=1024, cache=False)
        for c in (a, b):
            assert (c.image == fresh.image).all() and (c.mask == fresh.mask).all() and c.meta == fresh.meta


def test_isic_sample(realdata):
    sample("isic2018/ISIC2018_Task1-2_Training_Input")
    cases = L.load_isic(max_side=1024)
    _check_cases(cases, ISIC_N, "isic", 1024)
    c = cases[0]
    raw = np.asarray(Image.open(c.meta["mask_paths"][0]))
    assert set(np.unique(raw)) <= {0, 255} and (c.mask == (raw == 255)).all()   # lossless 0/255 PNG masks


def test_spleen_ct_folder_sample():
    root = sample("folders/spleen_ct")
    vols = L.load_folder(root, "spleen", window=(L.CT_LEVEL, L.CT_WIDTH))
    assert [v.volume_id for v in vols] == sorted(SPLEEN) and all(isinstance(v, Volume) for v in vols)
    for v in vols:
        shape, voxels = SPLEEN[v.volume_id]
        assert v.image.shape == shape and v.image.dtype == np.uint8 and v.mask.dtype == bool
        assert v.mask.shape == shape and int(v.mask.sum()) == voxels   # silver-standard spleen voxels
        assert v.meta["orientation"] == "RAS" and not v.meta["empty_mask"] and v.foreground_slices()
        assert 0 < v.image.mean() < 255
    by_id = {v.volume_id: v for v in vols}
    np.testing.assert_allclose(by_id["ts_dicom_ct"].spacing, (0.9765625, 0.9765625, 2.0), rtol=1e-6)
    # ts_ct_sm is the top 30 slices of ts_ct_full (README), so reorientation must agree between them.
    assert (by_id["ts_ct_sm"].image == by_id["ts_ct_full"].image[:, :, -30:]).all()


def test_spleen_mr_folder_sample(realdata):
    sample("folders/spleen_mr")
    vols = L.load_spleen_mr()
    assert len(vols) == SPLEEN_MR_N and len({v.meta["group"] for v in vols}) == SPLEEN_MR_N   # one patient each
    for v in vols:
        assert v.image.shape[:2] == (256, 256) and 31 <= v.image.shape[2] <= 45 and v.image.dtype == np.uint8
        assert v.source == "real" and v.meta["labels"] == "manual" and v.foreground_slices()
        np.testing.assert_allclose(v.spacing, (1.25, 1.25, 7.7), rtol=1e-3)


def test_cxr_lungs_folder_sample(realdata):
    sample("folders/cxr_lungs")
    cases = L.load_cxr_lungs(max_side=256)
    _check_cases(cases, CXR_LUNGS_N, "cxr", 256)
    assert sum(c.case_id.startswith("MCUCXR") for c in cases) == 40 and all(c.meta["orig_size"] == (512, 512)
                                                                            for c in cases)


def test_the_body_frame_holds_the_spleen_on_every_real_volume(realdata):
    """Found from the image alone (CT and MR alike), each slice's body box holds that slice's spleen, and the body's
    range of slices holds the spleen's slices."""
    from frozenseg.boxes import mask_to_box
    from frozenseg.pipeline.volume import BodyFrame

    sample("folders/spleen_ct")
    sample("folders/spleen_mr")
    for v in L.load_spleen_silver() + L.load_spleen_mr():
        body = BodyFrame.of(v.image, v.spacing[2])
        zs = v.foreground_slices()
        assert body.z0 <= zs[0] and zs[-1] <= body.z1, v.volume_id
        for z in zs:
            b, s = body.boxes[z], mask_to_box(v.mask[:, :, z])
            assert b[0] - 3 <= s[0] and b[1] - 3 <= s[1] and s[2] <= b[2] + 3 and s[3] <= b[3] + 3, (v.volume_id, z)


def test_leave_one_scan_out_on_the_real_ct_folder_keeps_the_crop_with_its_scan(realdata):
    from frozenseg.experiments.spleen_lovo import lovo_folds

    sample("folders/spleen_ct")
    folds = {t.volume_id: sorted(v.volume_id for v in train) for t, train in lovo_folds(L.load_spleen_silver())}
    assert folds == {"ts_ct_full": ["ts_dicom_ct"], "ts_ct_sm": ["ts_dicom_ct"],
                     "ts_dicom_ct": ["ts_ct_full", "ts_ct_sm"]}


# ----------------------------------------------------------------------------- the study on real images


@pytest.mark.slow
def test_oracle_and_kvasir_pipeline_run_on_real_images(realdata):
    """Smoke sizes on the real Kvasir sample: the GT-box oracle and the Kvasir pipeline section (every budget, the
    route's genome included) run through the same code as the report, and their rows say 'real'."""
    from frozenseg.experiments.oracle import run_oracle
    from frozenseg.experiments.domain_report import run_budgets
    from frozenseg.study import setup

    sample("kvasir")
    study = setup(profile="smoke", domains=["kvasir"], source="real", verbose=False)
    assert study.source_detail("kvasir") == "real"
    data = study.data("kvasir")
    assert data.source == "real" and len(data.test) == study.profile.n_test and "seeded random" in data.meta["split"]
    assert study.source_detail("kvasir") == f"real (n = {KVASIR_N} images)"
    oracle = run_oracle(study)
    gt = oracle[(oracle.method == "gt_box") & (oracle.unit == "case")]
    assert (gt.source == "real").all() and gt.dice.mean() > 0.7, "the GT box segments real polyps"
    df, info = run_budgets(study, "kvasir", 0, "04_kvasir")
    dep = df[df.stage == "deployed"]
    assert set(dep.n_labels) == set(study.profile.budgets) and (dep.source == "real").all()
    assert dep.dice.between(0, 1).all() and (dep.labels_used <= dep.n_labels).all()
    assert info["route"].localizer["name"] == "cpg"


def test_sample_profile_takes_real_data_where_present_and_phantoms_elsewhere(realdata):
    """The sample profile: each domain's source and label quality are said per domain, spleen from the silver CT
    folder when MSD is absent (scans kept on one side of the split), chest X-ray from the resized folder when the
    official Montgomery and Shenzhen archives are absent: no phantom domain left."""
    from frozenseg.study import setup

    for sub in ("kvasir", "isic2018", "folders/spleen_ct", "folders/cxr_lungs"):
        sample(sub)
    study = setup(profile="sample", verbose=False)
    assert [study.source_of(d) for d in study.domains] == ["real", "real", "real", "real"]
    spleen = study.data("spleen")
    assert spleen.meta["labels"] == "silver" and "silver labels" in study.source_detail("spleen")
    groups = {"ts_ct_full": "a", "ts_ct_sm": "a", "ts_dicom_ct": "b"}
    sides = {groups[v] for v in spleen.volumes}, {groups[v] for v in spleen.meta["train_volumes"]}
    assert not sides[0] & sides[1], "the crop of a scan is never on the other side of the split from the scan"
    for d in study.domains:
        study.data(d)
    label = study.source_label()
    assert "isic: real sample (n = 51 images)" in label and "phantom" not in label
    assert f"cxr: real sample (n = {CXR_LUNGS_N} images, resized" in label and "not the official layout" in label
    assert "kvasir: real sample (n = 300 images)" in label
