"""python -m frozenseg annotate: a folder of images with a few masks in, a mask per unlabelled item in its source
geometry out, with the HUE queue, the review page, the rounds, resuming, and a clear error for each bad input."""
import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from frozenseg.annotate import annotate
from frozenseg.data.phantoms import make_phantom_case, make_phantom_volume
from frozenseg.errors import DataError

SMOKE = {"candidates": ["agnostic", "cxr"], "folds": 2, "genome_budget": 0, "finalists": 1, "progress": False}
KVASIR = Path(os.environ.get("FROZENSEG_DATA", "/work/shared/realdata")) / "kvasir" / "Kvasir-SEG"


def _snapshot(folder: Path) -> dict:
    """sha256 of every file under images/ and masks/ (the collection must never be modified)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in ("images", "masks") for p in sorted((folder / sub).rglob("*")) if p.is_file()}


def _save_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def _cxr_folder(root: Path, n_labelled: int = 4, n_unlabelled: int = 4) -> dict:
    """Chest X-ray phantoms of 128 px: the first ``n_labelled`` with masks; the unlabelled ones in several formats
    and sizes (RGB PNG, 16-bit grey PNG, TIF, a larger JPG). Returns name -> ground-truth mask at file size."""
    (root / "images").mkdir(parents=True)
    truth = {}
    for i in range(n_labelled + n_unlabelled):
        c = make_phantom_case("cxr", i, 128, 0)
        name, img, mask = f"case{i}", c.image, c.mask
        kind = i - n_labelled
        if kind == 1:                                       # 16-bit grey PNG
            Image.fromarray(img[..., 0].astype(np.uint16) * 257).save(root / "images" / f"{name}.png")
        elif kind == 2:
            Image.fromarray(img).save(root / "images" / f"{name}.tif")
        elif kind == 3:                                     # larger than max_side in the tests: written at full size
            big = Image.fromarray(img).resize((200, 160), Image.BILINEAR)
            big.save(root / "images" / f"{name}.jpg", quality=95)
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((200, 160), Image.NEAREST)) > 127
        else:
            Image.fromarray(img).save(root / "images" / f"{name}.png")
        if i < n_labelled:
            _save_mask(root / "masks" / f"{name}.png", mask)
        truth[name] = mask
    return truth


def test_onboard_accepts_any_folder_name(litemedsam, tmp_path):
    """A folder's own name is never an error: 'my scans' is not a simple identifier, and onboard takes it."""
    from frozenseg.pipeline import onboard

    _cxr_folder(tmp_path / "my scans", 4, 0)
    pipe, _ = onboard(tmp_path / "my scans", litemedsam, n_labels=4, route="cxr", genome_budget=0)
    assert pipe.route.domain == "my_scans"


def test_annotate_a_folder_of_2d_images(litemedsam, tmp_path):
    folder = tmp_path / "lungs"
    truth = _cxr_folder(folder)
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)   # unreadable: skipped
    before = _snapshot(folder)
    with pytest.warns(UserWarning, match="broken.png"):
        res = annotate(folder, model=litemedsam, batch=2, max_side=128, **SMOKE)
    out = folder / "frozenseg"
    assert _snapshot(folder) == before, "nothing in FOLDER/images or FOLDER/masks is modified"
    unlabelled = ["case4", "case5", "case6", "case7"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{n}.png" for n in unlabelled]
    for n in unlabelled:
        m = np.asarray(Image.open(out / "masks" / f"{n}.png"))
        assert m.shape == truth[n].shape and set(np.unique(m)) <= {0, 255}, n    # the image's own size
    assert res["skipped"] and "broken.png" in res["skipped"][0][0]
    table = pd.read_csv(out / "uncertainty.csv")
    assert sorted(table.name) == unlabelled and table.u.is_monotonic_decreasing
    assert {"u", "box_iou", "entropy", "empty_mask", "rank", "queued"} <= set(table.columns)
    assert list(table.queued) == [True, True, False, False]
    queue = (out / "to_annotate.txt").read_text().split()
    assert [Path(q).stem for q in queue] == list(table.name[:2]) and all(q.startswith("images/") for q in queue)
    page = (out / "review.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "http" not in page.replace("http-equiv", "")
    assert f"<b>{res['fit'].route}</b>" in page and "held-out Dice" in page and "±" in page, "choice and CV table"
    assert page.index(f">{table.name[0]}<") < page.index(f">{table.name[3]}<"), "most uncertain first"
    rounds = json.loads((out / "rounds.json").read_text())["rounds"]
    assert len(rounds) == 1 and rounds[0]["labels"] == 4 and rounds[0]["queued"] == list(table.name[:2])
    assert rounds[0]["cv_dice"] == pytest.approx(res["fit"].cv_dice) and 0 <= rounds[0]["cv_dice"] <= 1
    dices = [2 * (np.asarray(Image.open(out / "masks" / f"{n}.png")) > 0)[truth[n]].sum()
             / ((np.asarray(Image.open(out / "masks" / f"{n}.png")) > 0).sum() + truth[n].sum()) for n in unlabelled]
    assert np.mean(dices) > 0.5, dices

    # round 2: the queued items get their masks (a simulated annotator), the run refits and records the round
    for q in queue:
        _save_mask(folder / "masks" / f"{Path(q).stem}.png", truth[Path(q).stem])
    res2 = annotate(folder, model=litemedsam, batch=2, max_side=128, **SMOKE)
    rounds = json.loads((out / "rounds.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and rounds[1]["labels"] == 6 and rounds[1]["predicted"] == 2
    assert res2["previous"]["round"] == 1 and res2["encoded"] == 0, "a second run encodes nothing new"
    assert sorted(p.stem for p in (out / "masks").iterdir()) == sorted(set(unlabelled) - {Path(q).stem for q in queue})
    assert res2["fit"].labels_key != res["fit"].labels_key


def test_an_interrupted_run_resumes(litemedsam, tmp_path, monkeypatch):
    from frozenseg.annotate import run

    folder = tmp_path / "c"
    _cxr_folder(folder, 3, 4)
    real, calls = run.predict_item, []

    def dies_after_two(item, *a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(item.name)
        return real(item, *a, **k)

    monkeypatch.setattr(run, "predict_item", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        annotate(folder, model=litemedsam, max_side=128, route="cxr", **SMOKE)
    assert not (folder / "frozenseg" / "rounds.json").exists() and len(list((folder / "frozenseg/masks").iterdir())) == 2
    done, calls[:] = list(calls), []
    monkeypatch.setattr(run, "predict_item", lambda item, *a, **k: (calls.append(item.name), real(item, *a, **k))[1])
    res = annotate(folder, model=litemedsam, max_side=128, route="cxr", **SMOKE)
    assert res["resumed"] == 2 and sorted(calls) == sorted({"case3", "case4", "case5", "case6"} - set(done))
    assert len(pd.read_csv(folder / "frozenseg" / "uncertainty.csv")) == 4


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def test_annotate_nifti_volumes_keeps_each_volume_affine(litemedsam, tmp_path):
    import nibabel as nib

    folder = tmp_path / "ct"
    affine = np.diag([-0.9, -0.9, 2.5, 1.0])            # LPS-like storage: the loader reorients, the output does not
    affine[:3, 3] = [30.0, 20.0, -40.0]
    vols = {}
    for i in range(2):
        v = make_phantom_volume(i, 64, 8, 0)
        hu = v.image.astype(np.int16) * 400 // 255 - 160
        _nifti(folder / "images" / f"vol{i}.nii.gz", hu[::-1, ::-1], affine)
        if i < 1:
            _nifti(folder / "masks" / f"vol{i}.nii.gz", v.mask[::-1, ::-1].astype(np.uint8), affine)
        vols[f"vol{i}"] = v.mask[::-1, ::-1]
    res = annotate(folder, model=litemedsam, **SMOKE)
    out = nib.load(str(folder / "frozenseg" / "masks" / "vol1.nii.gz"))
    assert np.allclose(out.affine, affine) and out.shape == vols["vol1"].shape
    pred = np.asarray(out.dataobj) > 0
    assert _dice(pred, vols["vol1"]) > _dice(pred[::-1, ::-1], vols["vol1"]), "in the source voxel order"
    assert list(res["table"].name) == ["vol1"] and res["fit"].n_labels >= 3


def _dicom_series(folder: Path, volume: np.ndarray, uid: str, z0: float = 0.0, skip: int | None = None,
                  series_uid: str | None = None) -> None:
    """Write a (rows, cols, slices) int16 HU volume as a CT series, files named in shuffled order."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid(entropy_srcs=[uid])
    order = np.random.default_rng(0).permutation(volume.shape[2])
    for n, k in enumerate(order):
        if k == skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = CTImageStorage, ExplicitVRLittleEndian
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid, str(k)])
        ds = FileDataset(str(folder / f"f{n:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", series_uid, generate_uid(entropy_srcs=[uid])
        ds.ImagePositionPatient = [-30.0, -30.0, z0 + 2.5 * float(k)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.InstanceNumber = [0.9, 0.9], 2.5, int(k) + 1
        ds.Rows, ds.Columns = volume.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (volume[:, :, k].astype(np.int32) + 1024).astype(np.uint16).tobytes()
        ds.save_as(folder / f"f{n:03d}.dcm", enforce_file_format=True)


def _ct(i: int) -> tuple[np.ndarray, np.ndarray]:
    v = make_phantom_volume(i, 64, 8, 0)
    return v.image.astype(np.int16) * 400 // 255 - 160, v.mask


def test_annotate_dicom_series_writes_the_series_geometry(litemedsam, tmp_path):
    import nibabel as nib

    from frozenseg.annotate.dicom import read_series

    folder = tmp_path / "dcm"
    for i in range(2):
        hu, mask = _ct(i)
        _dicom_series(folder / "images" / f"series{i}", hu, f"s{i}")
    _, affine, modality = read_series(folder / "images" / "series0")
    assert modality == "CT" and np.allclose(affine[:3, 2], [0, 0, 2.5]) and np.allclose(affine[:3, 3], [30, 30, 0])
    _, mask0 = _ct(0)
    _nifti(folder / "masks" / "series0.nii.gz", mask0.transpose(1, 0, 2).astype(np.uint8), affine)  # (col, row, z)
    res = annotate(folder, model=litemedsam, **SMOKE)
    out = nib.load(str(folder / "frozenseg" / "masks" / "series1.nii.gz"))
    _, mask1 = _ct(1)
    truth = mask1.transpose(1, 0, 2)
    pred = np.asarray(out.dataobj) > 0
    assert np.allclose(out.affine, read_series(folder / "images" / "series1")[1]) and out.shape == truth.shape
    assert pred.any() and _dice(pred, truth) > 0.1      # voxel-exact geometry: test_a_mask_goes_back_in_its_source_...
    assert list(res["table"].name) == ["series1"]


def test_a_mask_goes_back_in_its_source_geometry_exactly(tmp_path):
    """Reading an item (NIfTI stored left-right/back-front flipped; a DICOM series whose files are shuffled) and
    writing its mask back gives the mask file's own voxels and affine, bit for bit."""
    import nibabel as nib

    from frozenseg.annotate.dicom import read_series
    from frozenseg.annotate.inputs import read_collection
    from frozenseg.annotate.outputs import write_mask

    affine = np.diag([-0.9, -0.9, 2.5, 1.0])
    hu, mask = _ct(0)
    _nifti(tmp_path / "f" / "images" / "v.nii.gz", hu, affine)
    _nifti(tmp_path / "f" / "masks" / "v.nii.gz", mask.astype(np.uint8), affine)
    _dicom_series(tmp_path / "f" / "images" / "s", hu, "s")
    s_affine = read_series(tmp_path / "f" / "images" / "s")[1]
    _nifti(tmp_path / "f" / "masks" / "s.nii.gz", mask.transpose(1, 0, 2).astype(np.uint8), s_affine)
    items = {it.name: it for it in read_collection(tmp_path / "f").items}
    for name, truth, aff in (("v", mask, affine), ("s", mask.transpose(1, 0, 2), s_affine)):
        back = nib.load(str(write_mask(tmp_path / "out", items[name], items[name].mask)))
        assert np.allclose(back.affine, aff) and np.array_equal(np.asarray(back.dataobj) > 0, truth), name


# ---------------------------------------------------------------- bad input: a clear error, nothing written

def _fails(folder: Path, match: str, **kw):
    with pytest.raises(DataError, match=match) as err:
        annotate(folder, model=None, **{**SMOKE, **kw})
    assert not (folder / "frozenseg").exists(), "nothing is written on bad input"
    return err.value


def test_a_mask_of_another_size_names_the_file(tmp_path):
    _cxr_folder(tmp_path / "f", 4, 1)
    _save_mask(tmp_path / "f" / "masks" / "case2.png", np.ones((100, 90), bool))
    err = _fails(tmp_path / "f", "differs from image size")
    assert Path(err.path).name == "case2.png" and "Fix" in str(err)


def test_a_volume_mask_for_a_2d_image(tmp_path):
    _cxr_folder(tmp_path / "f", 4, 1)
    (tmp_path / "f" / "masks" / "case1.png").unlink()
    _nifti(tmp_path / "f" / "masks" / "case1.nii.gz", np.ones((128, 128, 5), np.uint8), np.eye(4))
    assert Path(_fails(tmp_path / "f", "3D mask volume").path).name == "case1.nii.gz"


@pytest.mark.parametrize("labels,route,need", [(1, "cxr", 2), (0, "cxr", 2), (2, "auto", 3)])
def test_too_few_labels_says_how_many_are_needed(tmp_path, labels, route, need):
    _cxr_folder(tmp_path / "f", labels, 2)
    _fails(tmp_path / "f", f"{labels} labelled images with a foreground found; at least {need} are needed",
           route=route)


def test_a_dicom_folder_with_two_series(tmp_path):
    hu, _ = _ct(0)
    _dicom_series(tmp_path / "f" / "images" / "mixed", hu[:, :, :4], "a")
    _dicom_series(tmp_path / "other", hu[:, :, 4:], "b", z0=10.0)
    for p in (tmp_path / "other").iterdir():
        p.rename(tmp_path / "f" / "images" / "mixed" / f"b_{p.name}")
    assert "one sub-folder per series" in str(_fails(tmp_path / "f", "holds 2 DICOM series"))


def test_a_dicom_series_with_a_missing_slice(tmp_path):
    hu, _ = _ct(0)
    _dicom_series(tmp_path / "f" / "images" / "s", hu, "a", skip=4)
    assert Path(_fails(tmp_path / "f", "missing slice").path).name == "s"


def test_the_command_line_prints_the_error_and_returns_2(tmp_path, capsys):
    from frozenseg.annotate.cli import main

    _cxr_folder(tmp_path / "f", 1, 1)
    assert main([str(tmp_path / "f"), "--route", "cxr", "--no-progress"]) == 2
    assert "at least 2 are needed" in capsys.readouterr().err and not (tmp_path / "f" / "frozenseg").exists()
    done = subprocess.run([sys.executable, "-m", "frozenseg"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "lib")})
    assert done.returncode == 0 and "annotate" in done.stdout


@pytest.mark.slow
def test_a_real_kvasir_folder(litemedsam, tmp_path):
    """Ten labelled Kvasir-SEG images and twenty unlabelled ones (symlinks into the sample): one mask per unlabelled
    image at the image's own size."""
    if not (KVASIR / "images").is_dir():
        pytest.skip(f"the Kvasir-SEG sample is not at {KVASIR} (set FROZENSEG_DATA)")
    names = sorted(p.stem for p in (KVASIR / "images").glob("*.jpg"))[:30]
    folder = tmp_path / "kvasir"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i, n in enumerate(names):
        (folder / "images" / f"{n}.jpg").symlink_to(KVASIR / "images" / f"{n}.jpg")
        if i < 10:
            (folder / "masks" / f"{n}.jpg").symlink_to(KVASIR / "masks" / f"{n}.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = annotate(folder, model=litemedsam, max_side=512, candidates=["kvasir", "agnostic"], folds=3,
                       genome_budget=2, finalists=1, progress=False)
    masks = sorted((folder / "frozenseg" / "masks").iterdir())
    assert [p.stem for p in masks] == names[10:]
    for p in masks:
        assert Image.open(p).size == Image.open(KVASIR / "images" / f"{p.stem}.jpg").size
    assert len(res["table"]) == 20 and (folder / "frozenseg" / "review.html").is_file()
