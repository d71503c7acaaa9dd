"""Real-format loaders on tiny fixtures written in the datasets' exact on-disk layouts."""
from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from frozenseg.data import loaders as L
from frozenseg.data.types import Case, Volume
from frozenseg.errors import ConfigError, DataError, MissingDatasetError

H, W = 24, 32


# ----------------------------------------------------------------------------- fixture writers

def _rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A random RGB uint8 image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _box(h: int = H, w: int = W, r0: int = 6, r1: int = 18, c0: int = 8, c1: int = 24) -> np.ndarray:
    """A bool mask with one filled rectangle."""
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def _save(path: Path, arr: np.ndarray, **kw) -> Path:
    """Write an array with PIL (format from the suffix), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def _mask255(mask: np.ndarray) -> np.ndarray:
    """bool -> 0/255 uint8."""
    return mask.astype(np.uint8) * 255


def make_isic(root: Path, ids=(0, 1, 2), empty=()) -> Path:
    """ISIC 2018 Task 1 layout: images + <id>_segmentation.png masks."""
    for i in ids:
        cid = f"ISIC_{i:07d}"
        _save(root / "ISIC2018_Task1-2_Training_Input" / f"{cid}.jpg", _rgb(i), quality=95)
        m = np.zeros((H, W), bool) if i in empty else _box()
        _save(root / "ISIC2018_Task1_Training_GroundTruth" / f"{cid}_segmentation.png", _mask255(m))
    return root


def make_kvasir(root: Path, names=("cju0qkwl35piu0993l0dewei2", "cju0s690hkp960855tjuaqvv0")) -> Path:
    """Kvasir-SEG layout: Kvasir-SEG/images/*.jpg + Kvasir-SEG/masks/*.jpg (JPEG masks)."""
    for k, name in enumerate(names):
        _save(root / "Kvasir-SEG" / "images" / f"{name}.jpg", _rgb(10 + k), quality=90)
        _save(root / "Kvasir-SEG" / "masks" / f"{name}.jpg", _mask255(_box()), quality=75)
    return root


def make_montgomery(root: Path, ids=(1, 2)) -> Path:
    """Montgomery layout: MontgomerySet/CXR_png + ManualMask/{left,right}Mask, 16-bit grey images."""
    for i in ids:
        name = f"MCUCXR_{i:04d}_0.png"
        grey = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 50 + 1000).astype(np.uint16)
        _save(root / "MontgomerySet" / "CXR_png" / name, grey)
        _save(root / "MontgomerySet" / "ManualMask" / "leftMask" / name, _mask255(_box(c0=2, c1=10)))
        _save(root / "MontgomerySet" / "ManualMask" / "rightMask" / name, _mask255(_box(c0=20, c1=30)))
    return root


def make_shenzhen(root: Path, ids=(1, 2, 3), masked=(1, 3)) -> Path:
    """Shenzhen layout: ChinaSet_AllFiles/CXR_png/CHNCXR_*.png + mask/<stem>_mask.png (0/255 PNG)."""
    for i in ids:
        stem = f"CHNCXR_{i:04d}_0"
        _save(root / "ChinaSet_AllFiles" / "CXR_png" / f"{stem}.png", _rgb(20 + i)[..., 0])
        if i in masked:
            _save(root / "mask" / f"{stem}_mask.png", _mask255(_box()))
    return root


SPACING = (0.7, 0.8, 2.5)
RAS_SHAPE = (8, 7, 5)


def _canonical_hu(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A canonical (RAS) CT-like volume in HU and its label."""
    hu = np.random.default_rng(seed).uniform(-1000, 600, RAS_SHAPE).astype(np.float32)
    hu[0, 0, 0], hu[1, 0, 0], hu[2, 0, 0], hu[3, 0, 0] = -160, 40, 240, -1000
    lab = np.zeros(RAS_SHAPE, np.uint8)
    lab[2:5, 1:4, 1:3] = 1
    return hu, lab


def write_noncanonical(path: Path, data: np.ndarray, dtype=np.float32) -> Path:
    """Save a RAS array through a permuted + flipped (non-canonical) affine."""
    canon = nib.Nifti1Image(data.astype(dtype), np.diag([*SPACING, 1.0]))
    img = canon.as_reoriented(np.array([[1, -1], [2, 1], [0, -1]]))
    assert nib.aff2axcodes(img.affine) != ("R", "A", "S")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def make_spleen(root: Path, ids=(2, 10)) -> Path:
    """MSD layout: Task09_Spleen/imagesTr + labelsTr, plus macOS ._ junk files."""
    task = root / "Task09_Spleen"
    for i in ids:
        hu, lab = _canonical_hu(i)
        write_noncanonical(task / "imagesTr" / f"spleen_{i}.nii.gz", hu)
        write_noncanonical(task / "labelsTr" / f"spleen_{i}.nii.gz", lab, np.uint8)
    (task / "imagesTr" / "._spleen_2.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    (task / "labelsTr" / "._spleen_2.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    return root


def _assert_names_fix(exc: pytest.ExceptionInfo, path: Path) -> None:
    """The error names the file and says how to fix it."""
    msg = str(exc.value)
    assert str(path) in msg or path.name in msg, msg
    assert "Fix:" in msg


# ----------------------------------------------------------------------------- pixel conventions

def test_to_rgb_uint8_variants():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert L.to_rgb_uint8(grey).shape == (3, 4, 3)
    assert (L.to_rgb_uint8(grey)[..., 1] == grey).all()
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 3] = 255
    assert L.to_rgb_uint8(rgba).shape == (3, 4, 3)
    wide = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    out = L.to_rgb_uint8(wide)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert L.to_rgb_uint8(np.ones((2, 2), np.float32)).max() == 0
    with pytest.raises(DataError):
        L.to_rgb_uint8(np.zeros((2, 2, 5)))


def test_binarize_rule_jpeg_and_labels():
    noisy = np.array([[0, 20, 127], [128, 200, 255]], np.uint8)
    assert L.binarize_mask(noisy, lossy=True).tolist() == [[False, False, False], [True, True, True]]
    labels01 = np.array([[0, 1], [1, 0]], np.uint8)
    assert L.binarize_mask(labels01).tolist() == [[False, True], [True, False]]
    labels255 = np.array([[0, 255], [255, 0]], np.uint8)
    assert L.binarize_mask(labels255).tolist() == [[False, True], [True, False]]
    classes = np.array([[0, 2], [3, 0]], np.uint8)
    assert L.binarize_mask(classes).sum() == 2
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    assert L.binarize_mask(colour).tolist() == [[True, False], [False, False]]


def test_read_image_modes(tmp_path):
    rgb = _rgb(1)
    assert (L.read_image(_save(tmp_path / "a.png", rgb)) == rgb).all()
    grey = rgb[..., 0]
    out = L.read_image(_save(tmp_path / "g.png", grey))
    assert out.shape == (H, W, 3) and (out[..., 2] == grey).all()
    rgba = np.dstack([rgb, np.full((H, W), 7, np.uint8)])
    assert (L.read_image(_save(tmp_path / "x.png", rgba)) == rgb).all()
    wide = (np.arange(H * W).reshape(H, W) * 40 + 500).astype(np.uint16)
    out16 = L.read_image(_save(tmp_path / "w.png", wide))
    assert out16.dtype == np.uint8 and out16.min() == 0 and out16.max() == 255
    pal = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE)
    pal.save(tmp_path / "p.png")
    assert L.read_image(tmp_path / "p.png").shape == (H, W, 3)


def test_read_mask_jpg_and_label_png(tmp_path):
    box = _box()
    jpg = L.read_mask(_save(tmp_path / "m.jpg", _mask255(box), quality=60))
    assert (jpg ^ box).sum() <= 0.02 * box.size
    assert L.read_mask(_save(tmp_path / "l01.png", box.astype(np.uint8))).tolist() == box.tolist()
    assert L.read_mask(_save(tmp_path / "l255.png", _mask255(box))).tolist() == box.tolist()
    pal = Image.fromarray(box.astype(np.uint8), mode="L").convert("P")
    pal.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)   # label 1 drawn black: the index must still count
    pal.save(tmp_path / "pal.png")
    assert L.read_mask(tmp_path / "pal.png").tolist() == box.tolist()


# ----------------------------------------------------------------------------- dataset loaders

def test_load_isic(tmp_path):
    root = make_isic(tmp_path / "isic2018", ids=(2, 0, 1))
    cases = L.load_isic(root)
    assert [c.case_id for c in cases] == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]
    c = cases[0]
    assert isinstance(c, Case) and c.domain == "isic" and c.source == "real"
    assert c.image.shape == (H, W, 3) and c.image.dtype == np.uint8
    assert c.mask.dtype == bool and (c.mask == _box()).all()
    assert c.meta["empty_mask"] is False and c.meta["image_path"].endswith("ISIC_0000000.jpg")


def test_load_isic_ids_and_max_side(tmp_path):
    root = make_isic(tmp_path / "isic2018")
    cases = L.load_isic(root, ids=["ISIC_0000002", "ISIC_0000001"], max_side=16)
    assert [c.case_id for c in cases] == ["ISIC_0000001", "ISIC_0000002"]
    assert max(cases[0].image.shape[:2]) == 16 and cases[0].mask.shape == cases[0].image.shape[:2]
    assert cases[0].meta["orig_size"] == (H, W) and cases[0].meta["scale"] == 0.5
    with pytest.raises(DataError, match="not found"):
        L.load_isic(root, ids=["ISIC_9999999"])


def test_empty_mask_is_kept_and_flagged(tmp_path):
    root = make_isic(tmp_path / "isic2018", empty=(1,))
    with pytest.warns(UserWarning, match="empty mask"):
        cases = L.load_isic(root)
    assert len(cases) == 3
    assert [c.meta["empty_mask"] for c in cases] == [False, True, False]
    assert not cases[1].mask.any()


def test_load_kvasir_jpg_masks(tmp_path):
    root = make_kvasir(tmp_path / "kvasir")
    cases = L.load_kvasir(root)
    assert [c.case_id for c in cases] == sorted(c.case_id for c in cases)
    for c in cases:
        assert c.domain == "kvasir" and ((c.mask ^ _box()).sum() <= 0.02 * c.mask.size)


def test_load_kvasir_unpaired(tmp_path):
    root = make_kvasir(tmp_path / "kvasir")
    _save(root / "Kvasir-SEG" / "images" / "lonely.jpg", _rgb(3))
    with pytest.raises(DataError, match="lonely"):
        L.load_kvasir(root)


def test_load_montgomery_unites_lungs(tmp_path):
    root = make_montgomery(tmp_path / "cxr")
    cases = L.load_montgomery(root)
    assert [c.case_id for c in cases] == ["MCUCXR_0001_0", "MCUCXR_0002_0"]
    expect = _box(c0=2, c1=10) | _box(c0=20, c1=30)
    assert (cases[0].mask == expect).all() and cases[0].domain == "cxr"
    assert cases[0].image.min() == 0 and cases[0].image.max() == 255   # 16-bit min-max scaled


def test_load_montgomery_missing_right_mask(tmp_path):
    root = make_montgomery(tmp_path / "cxr")
    gone = root / "MontgomerySet" / "ManualMask" / "rightMask" / "MCUCXR_0002_0.png"
    gone.unlink()
    with pytest.raises(DataError) as exc:
        L.load_montgomery(root)
    _assert_names_fix(exc, gone)


def test_load_shenzhen_skips_unmasked_with_warning(tmp_path):
    root = make_shenzhen(tmp_path / "cxr")
    with pytest.warns(UserWarning, match="1 images have no lung mask"):
        cases = L.load_shenzhen(root)
    assert [c.case_id for c in cases] == ["CHNCXR_0001_0", "CHNCXR_0003_0"]
    assert (cases[0].mask == _box()).all()


def test_load_shenzhen_kaggle_nested_mask_folder(tmp_path):
    root = tmp_path / "cxr"
    make_shenzhen(root, ids=(1,), masked=())
    _save(root / "shcxr-lung-mask" / "mask" / "mask" / "CHNCXR_0001_0_mask.png", _mask255(_box()))
    assert [c.case_id for c in L.load_shenzhen(root)] == ["CHNCXR_0001_0"]


def test_load_cxr_unites_both(tmp_path):
    root = make_shenzhen(make_montgomery(tmp_path / "cxr"), masked=(1, 2, 3))
    cases = L.load_cxr(root)
    assert len(cases) == 5 and {c.domain for c in cases} == {"cxr"}
    assert {c.meta["dataset"] for c in cases} == {"montgomery", "shenzhen"}
    assert L.load_real("cxr", root)[0].case_id == cases[0].case_id


def test_load_msd_spleen_reorients_and_windows(tmp_path):
    root = make_spleen(tmp_path / "msd")
    vols = L.load_msd_spleen(root)
    assert [v.volume_id for v in vols] == ["spleen_2", "spleen_10"]   # natural order, ._ junk skipped
    v = vols[0]
    hu, lab = _canonical_hu(2)
    assert isinstance(v, Volume) and v.domain == "spleen" and v.source == "real"
    assert v.image.shape == RAS_SHAPE and v.image.dtype == np.uint8
    np.testing.assert_allclose(v.spacing, SPACING, rtol=1e-5)
    assert (v.mask == (lab > 0)).all()
    assert (v.image == L.window_ct(hu)).all()
    assert v.image[0, 0, 0] == 0 and v.image[1, 0, 0] == 128 and v.image[2, 0, 0] == 255 and v.image[3, 0, 0] == 0
    assert v.meta["orientation"] == "RAS" and v.foreground_slices() == [1, 2]


def test_spleen_nan_voxels(tmp_path):
    root = make_spleen(tmp_path / "msd", ids=(1,))
    hu, _ = _canonical_hu(1)
    hu[3, 3, 3] = np.nan
    bad = write_noncanonical(root / "Task09_Spleen" / "imagesTr" / "spleen_1.nii.gz", hu)
    with pytest.raises(DataError, match="NaN/inf") as exc:
        L.load_msd_spleen(root)
    _assert_names_fix(exc, bad)
    assert "exclude" in str(exc.value)


def test_spleen_shape_mismatch(tmp_path):
    root = make_spleen(tmp_path / "msd", ids=(1,))
    lab = root / "Task09_Spleen" / "labelsTr" / "spleen_1.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.uint8), np.eye(4)), str(lab))
    with pytest.raises(DataError, match="differs from image shape") as exc:
        L.load_msd_spleen(root)
    _assert_names_fix(exc, lab)


def test_spleen_missing_label(tmp_path):
    root = make_spleen(tmp_path / "msd", ids=(1, 3))
    gone = root / "Task09_Spleen" / "labelsTr" / "spleen_3.nii.gz"
    gone.unlink()
    with pytest.raises(DataError) as exc:
        L.load_msd_spleen(root)
    _assert_names_fix(exc, gone)


def test_truncated_nifti(tmp_path):
    path = write_noncanonical(tmp_path / "v.nii.gz", _canonical_hu()[0])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as exc:
        L.read_nifti(path)
    _assert_names_fix(exc, path)


# ----------------------------------------------------------------------------- bad input

def test_corrupt_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(DataError) as exc:
        L.read_image(bad)
    _assert_names_fix(exc, bad)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_image(tmp_path, suffix):
    path = _save(tmp_path / f"t{suffix}", _rgb(5, 64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(DataError, match="truncated") as exc:
        L.read_image(path)
    _assert_names_fix(exc, path)


def test_load_truncated_images_must_stay_off(tmp_path, monkeypatch):
    path = _save(tmp_path / "ok.png", _rgb(1))
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match="LOAD_TRUNCATED_IMAGES"):
        L.read_image(path)


def test_truncated_mask_in_dataset(tmp_path):
    root = make_isic(tmp_path / "isic2018")
    mask = root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000001_segmentation.png"
    mask.write_bytes(mask.read_bytes()[:40])
    with pytest.raises(DataError) as exc:
        L.load_isic(root)
    _assert_names_fix(exc, mask)


def test_mask_of_other_size(tmp_path):
    root = make_isic(tmp_path / "isic2018")
    mask = root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000001_segmentation.png"
    _save(mask, _mask255(_box(h=H + 3)))
    with pytest.raises(DataError, match="differs from image size") as exc:
        L.load_isic(root)
    _assert_names_fix(exc, mask)


def test_missing_dataset_names_folder_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path / "data"))
    with pytest.raises(MissingDatasetError) as exc:
        L.load_kvasir()
    msg = str(exc.value)
    assert "kvasir_seg" in msg and str(tmp_path / "data" / "kvasir") in msg
    assert "FROZENSEG_DATA" in msg and "kvasir-seg.zip" in msg and "Fix:" in msg
    with pytest.raises(MissingDatasetError, match="msd_spleen"):
        L.load_msd_spleen(tmp_path / "elsewhere")


def test_unknown_domain():
    with pytest.raises(ConfigError, match="load_folder"):
        L.load_real("retina")


# ----------------------------------------------------------------------------- generic folder

def test_load_folder_mixed_formats(tmp_path):
    root = tmp_path / "new"
    _save(root / "images" / "b10.png", _rgb(1))
    _save(root / "masks" / "b10_mask.png", _mask255(_box()))
    _save(root / "images" / "b2.jpg", _rgb(2))
    _save(root / "masks" / "b2_segmentation.png", _box().astype(np.uint8))
    _save(root / "images" / "b3.tif", _rgb(3))
    _save(root / "masks" / "b3.tif", _mask255(_box()))
    (root / "images" / ".DS_Store").write_bytes(b"junk")
    cases = L.load_folder(root, "retina")
    assert [c.case_id for c in cases] == ["b2", "b3", "b10"]
    assert all(c.source == "folder" and c.domain == "retina" and (c.mask == _box()).all() for c in cases)


def test_load_folder_nifti_2d_and_3d(tmp_path):
    root = tmp_path / "ct"
    hu, lab = _canonical_hu(4)
    write_noncanonical(root / "images" / "vol1.nii.gz", hu)
    write_noncanonical(root / "masks" / "vol1.nii.gz", lab, np.uint8)
    (root / "images").mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(hu[:, :, 2], np.diag([0.5, 0.6, 1, 1])), str(root / "images" / "sl1.nii.gz"))
    nib.save(nib.Nifti1Image(lab[:, :, 2], np.diag([0.5, 0.6, 1, 1])), str(root / "masks" / "sl1_mask.nii.gz"))
    recs = L.load_folder(root, "ct", window=(40, 400))
    by_id = {r.case_id if isinstance(r, Case) else r.volume_id: r for r in recs}
    vol, sl = by_id["vol1"], by_id["sl1"]
    assert isinstance(vol, Volume) and vol.source == "folder" and (vol.mask == (lab > 0)).all()
    assert (vol.image == L.window_ct(hu)).all()
    assert isinstance(sl, Case) and sl.image.shape == (8, 7, 3) and (sl.mask == (lab[:, :, 2] > 0)).all()
    assert sl.spacing == pytest.approx((0.5, 0.6))


def test_load_folder_missing_mask(tmp_path):
    root = tmp_path / "new"
    _save(root / "images" / "a.png", _rgb(1))
    _save(root / "masks" / "a_mask.png", _mask255(_box()))
    _save(root / "images" / "orphan.png", _rgb(2))
    with pytest.raises(DataError, match="orphan.png") as exc:
        L.load_folder(root, "new")
    assert "images/" in str(exc.value) and "masks/" in str(exc.value)


def test_load_folder_unpaired_mask_and_bad_layout(tmp_path):
    root = tmp_path / "new"
    _save(root / "images" / "a.png", _rgb(1))
    _save(root / "masks" / "a.png", _mask255(_box()))
    _save(root / "masks" / "ghost_mask.png", _mask255(_box()))
    with pytest.raises(DataError, match="ghost_mask.png"):
        L.load_folder(root, "new")
    with pytest.raises(DataError, match="images/ and masks/"):
        L.load_folder(tmp_path / "nothing", "new")
    with pytest.raises(ConfigError):
        L.load_folder(root, "bad name!")


def test_no_warnings_on_clean_data(tmp_path):
    root = make_isic(tmp_path / "isic2018")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(L.load_isic(root)) == 3


# ----------------------------------------------------------------------------- bad input on real-format files

def _png16(path: Path, arr: np.ndarray) -> Path:
    """Write a 16-bit PNG (grey, grey + alpha, RGB or RGBA) byte by byte: PIL cannot write 16-bit colour."""
    import struct
    import zlib

    a = np.asarray(arr).astype(">u2")
    h, w = a.shape[:2]
    ctype = {2: 0, 3: {2: 4, 3: 2, 4: 6}.get(a.shape[-1])}[a.ndim]
    raw = b"".join(b"\x00" + a[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def _save_exif(path: Path, arr: np.ndarray, orientation: int, **kw) -> Path:
    """Write an image whose EXIF orientation tag is ``orientation`` (pixels stored un-rotated)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(path, arr, exif=exif, **kw)


def _scene(h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    """A dark RGB image with a bright off-centre rectangle, and that rectangle as a mask (not symmetric)."""
    mask = _box(h, w, r0=2, r1=9, c0=3, c1=13)
    img = np.full((h, w, 3), 30, np.uint8)
    img[mask] = 220
    return img, mask


def test_empty_jpeg_mask_in_kvasir_is_kept_and_flagged(tmp_path):
    root = make_kvasir(tmp_path / "kvasir")
    empty = root / "Kvasir-SEG" / "masks" / "cju0s690hkp960855tjuaqvv0.jpg"
    _save(empty, np.zeros((H, W, 3), np.uint8), quality=75)
    for _ in range(2):   # a fresh decode, then the cached one
        with pytest.warns(UserWarning, match="1 of 2 cases have an empty mask"):
            cases = L.load_kvasir(root)
        assert [c.meta["empty_mask"] for c in cases] == [False, True]
        assert not cases[1].mask.any() and cases[0].mask.any()


def test_mask_lost_in_shrink_is_flagged_empty(tmp_path):
    root = make_isic(tmp_path / "isic2018", ids=(0,))
    dot = np.zeros((64, 64), bool)
    dot[1, 1] = True
    _save(root / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000.jpg", _rgb(0, 64, 64))
    _save(root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000000_segmentation.png", _mask255(dot))
    with pytest.warns(UserWarning, match="empty mask"):
        (case,) = L.load_isic(root, max_side=8)
    assert not case.mask.any()
    assert case.meta["empty_mask"] is True and case.meta["mask_lost_in_shrink"] is True
    (full,) = L.load_isic(root)
    assert full.meta["empty_mask"] is False and "mask_lost_in_shrink" not in full.meta


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grey_or_cmyk_jpeg_among_rgb_kvasir_images(tmp_path, mode):
    root = make_kvasir(tmp_path / "kvasir")
    odd = root / "Kvasir-SEG" / "images" / "cju0qkwl35piu0993l0dewei2.jpg"
    Image.fromarray(_rgb(3)).convert(mode).save(odd, quality=95)
    assert Image.open(odd).mode == mode
    cases = L.load_kvasir(root)
    img = cases[0].image
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    expect = np.asarray(Image.open(odd).convert("RGB"))
    assert np.abs(img.astype(int) - expect).max() <= 1
    if mode == "L":
        assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_16bit_png_images(tmp_path):
    rng = np.random.default_rng(0)
    rgb12 = rng.integers(100, 4096, (H, W, 3)).astype(np.uint16)   # 12-bit data in a 16-bit PNG
    out = L.read_image(_png16(tmp_path / "rgb16.png", rgb12))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert (out == L._minmax_uint8(rgb12)).all()   # all 16 bits used, not only the high byte
    rgba = np.dstack([rgb12, np.full((H, W), 65535, np.uint16)])
    assert (L.read_image(_png16(tmp_path / "rgba16.png", rgba)) == L._minmax_uint8(rgb12)).all()
    la = np.dstack([rgb12[..., 0], np.full((H, W), 65535, np.uint16)])
    out_la = L.read_image(_png16(tmp_path / "la16.png", la))
    assert (out_la[..., 1] == L._minmax_uint8(rgb12[..., 0])).all()
    grey = L.read_image(_png16(tmp_path / "grey16.png", rgb12[..., 0]))
    assert (grey[..., 0] == L._minmax_uint8(rgb12[..., 0])).all()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("top", [1, 65535])
def test_16bit_png_masks(tmp_path, channels, top):
    box = _box()
    values = box.astype(np.uint16) * top
    arr = values if channels == 1 else np.dstack([values] * 3)
    path = _png16(tmp_path / "m16.png", arr)
    assert L.read_mask(path).tolist() == box.tolist()


def test_16bit_png_pair_in_a_folder(tmp_path):
    root = tmp_path / "folder"
    wide = np.arange(H * W).reshape(H, W).astype(np.uint16) * 60
    _png16(root / "images" / "a.png", np.dstack([wide, wide // 2, wide // 3]))
    _png16(root / "masks" / "a_mask.png", np.dstack([_box().astype(np.uint16)] * 3))
    (case,) = L.load_folder(root, "wide", max_side=16)
    assert case.mask.shape == (12, 16) and case.mask.any()
    assert case.image.dtype == np.uint8 and case.image.max() > 240   # min-max over all 16 bits (high byte: <= 179)


def test_exif_rotated_jpeg_is_read_in_display_orientation(tmp_path):
    img, _ = _scene()
    path = _save_exif(tmp_path / "rot.jpg", img, 6, quality=95)
    out = L.read_image(path)
    assert out.shape == (W, H, 3)
    assert (out == np.asarray(ImageOps.exif_transpose(Image.open(path)))).all()
    assert np.abs(out.astype(int) - np.rot90(img, -1)).max() <= 8   # orientation 6: rotate 90 degrees clockwise


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_tag_on_image_and_mask_keeps_the_pair_aligned(tmp_path, orientation):
    root = make_kvasir(tmp_path / "kvasir", names=("a",))
    img, mask = _scene()
    _save_exif(root / "Kvasir-SEG" / "images" / "a.jpg", img, orientation, quality=95)
    _save_exif(root / "Kvasir-SEG" / "masks" / "a.jpg", _mask255(mask), orientation, quality=95)
    (case,) = L.load_kvasir(root)
    k = {3: 2, 6: -1, 8: 1}[orientation]
    assert case.mask.shape == np.rot90(mask, k).shape
    assert (case.mask ^ np.rot90(mask, k)).sum() <= 2
    assert case.image[case.mask].mean() > 180 and case.image[~case.mask].mean() < 60   # still lines up
    assert case.meta["exif_orientation"] == orientation


def test_exif_rotated_image_with_untagged_display_oriented_mask(tmp_path):
    root = make_isic(tmp_path / "isic2018", ids=(0,))
    img, mask = _scene()
    _save_exif(root / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000.jpg", img, 6, quality=95)
    _save(root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000000_segmentation.png",
          _mask255(np.rot90(mask, -1)))   # drawn on the displayed (rotated) picture, saved without a tag
    (case,) = L.load_isic(root, max_side=16)
    full = L.load_isic(root)[0]
    assert (full.mask == np.rot90(mask, -1)).all() and full.image[full.mask].mean() > 180
    assert case.mask.shape == (16, 12) and case.meta["orig_size"] == (W, H)


def test_exif_rotated_image_with_mask_on_stored_grid_is_refused(tmp_path):
    root = make_isic(tmp_path / "isic2018", ids=(0,))
    img, mask = _scene()
    image = _save_exif(root / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000.jpg", img, 6, quality=95)
    gt = root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000000_segmentation.png"
    _save(gt, _mask255(mask))   # drawn on the un-rotated stored pixels
    with pytest.raises(DataError) as exc:
        L.load_isic(root)
    _assert_names_fix(exc, gt)
    msg = str(exc.value)
    assert image.name in msg and "EXIF orientation 6: rotate 90 degrees clockwise" in msg
    assert "no EXIF orientation" in msg and "stored, un-rotated pixel grid" in msg
    assert f"stored {(H, W)}, displayed {(W, H)}" in msg and "exif_transpose" in msg


def test_exif_tags_that_sizes_cannot_disambiguate_are_refused(tmp_path):
    root = make_isic(tmp_path / "isic2018", ids=(0,))
    img, mask = _scene()
    _save_exif(root / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000.jpg", img, 3, quality=95)
    gt = root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000000_segmentation.png"
    _save(gt, _mask255(mask))
    with pytest.raises(DataError, match="cannot tell whether the mask was drawn on the displayed") as exc:
        L.load_isic(root)
    _assert_names_fix(exc, gt)
    assert "EXIF orientation 3: rotate 180 degrees" in str(exc.value)
    _save_exif(gt, _mask255(mask), 3)   # the fix: the same tag on the mask
    (case,) = L.load_isic(root)
    assert (case.mask == np.rot90(mask, 2)).all()


def test_jpeg_mask_noise_is_binarised_at_128(tmp_path):
    box = _box()
    path = _save(tmp_path / "m.jpg", np.dstack([_mask255(box)] * 3), quality=20)
    raw = np.asarray(Image.open(path))
    assert not np.isin(raw, (0, 255)).all()   # compression noise is present
    got = L.read_mask(path)
    assert (got == (raw.max(axis=2) > 127)).all()
    assert (got ^ box).sum() <= 0.02 * box.size
    soft = _mask255(box)
    soft[box ^ _box(r0=7, r1=17, c0=9, c1=23)] = 100   # anti-aliased edge of a lossless mask
    assert L.read_mask(_save(tmp_path / "soft.png", soft)).tolist() == _box(r0=7, r1=17, c0=9, c1=23).tolist()


def test_huge_image_is_refused_with_its_size_and_the_fix(tmp_path, monkeypatch):
    path = _save(tmp_path / "big.jpg", _rgb(1, 64, 80), quality=90)
    png = _save(tmp_path / "big.png", _rgb(1, 64, 80))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)   # 80x64 = 5,120 pixels > 2 x 1,000
    with pytest.raises(DataError) as exc:
        L.read_image(path)
    _assert_names_fix(exc, path)
    msg = str(exc.value)
    assert "corrupt" not in msg and "80x64" in msg and "5,120 pixels" in msg and "2,000 pixels" in msg
    assert "pass max_side" in msg and "shrink the file to at most 50 px" in msg
    with pytest.raises(DataError, match="pass a smaller max_side .at most 10.") as exc:
        L.read_image(path, max_side=60)   # 60 leaves the JPEG at full size
    assert "still 80x64" not in str(exc.value)
    with pytest.raises(DataError, match="shrink the file") as exc:
        L.read_image(png, max_side=16)   # PNGs cannot be decoded at reduced size
    assert "corrupt" not in str(exc.value) and "80x64" in str(exc.value)


def test_huge_jpeg_pair_is_decoded_at_reduced_size_with_max_side(tmp_path, monkeypatch):
    root = make_kvasir(tmp_path / "kvasir", names=("big",))
    img, mask = _scene(64, 80)
    _save(root / "Kvasir-SEG" / "images" / "big.jpg", img, quality=95)
    _save(root / "Kvasir-SEG" / "masks" / "big.jpg", _mask255(mask), quality=95)
    full = L.load_kvasir(root, max_side=20)[0]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="pass max_side"):
        L.load_kvasir(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no DecompressionBombWarning either: nothing is decoded at full size
        (case,) = L.load_kvasir(root, max_side=20)
    assert case.image.shape == (16, 20, 3) and case.meta["orig_size"] == (64, 80) and case.meta["scale"] == 0.25
    assert (case.mask == full.mask).all() and np.abs(case.image.astype(int) - full.image).mean() < 8
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)   # 5,120 pixels: PIL would only warn
    with pytest.warns(Image.DecompressionBombWarning, match="pass max_side"):
        L.read_image(root / "Kvasir-SEG" / "images" / "big.jpg")


# ----------------------------------------------------------------------------- decoded-image cache

def _pairs_for_cache(tmp_path: Path) -> list[L.Pair]:
    """Pairs of several kinds: ISIC (PNG masks), Kvasir (JPEG masks), an EXIF-rotated pair, a 16-bit one."""
    isic = make_isic(tmp_path / "isic2018")
    kvasir = make_kvasir(tmp_path / "kvasir")
    img, mask = _scene()
    _save_exif(kvasir / "Kvasir-SEG" / "images" / "rot.jpg", img, 6)
    _save_exif(kvasir / "Kvasir-SEG" / "masks" / "rot.jpg", _mask255(mask), 6)
    folder = tmp_path / "folder"
    _png16(folder / "images" / "w.png", np.dstack([np.arange(H * W).reshape(H, W).astype(np.uint16) * 60] * 3))
    _save(folder / "masks" / "w.png", _mask255(_box()))
    return L.pairs_isic(isic) + L.pairs_kvasir(kvasir) + L.pairs_folder(folder)


def _same_case(a: Case, b: Case) -> bool:
    """Bit-identical arrays (dtype, shape, values) and equal meta."""
    return (a.image.dtype == b.image.dtype and a.image.shape == b.image.shape and (a.image == b.image).all()
            and a.mask.dtype == b.mask.dtype and (a.mask == b.mask).all() and a.meta == b.meta)


@pytest.mark.parametrize("max_side", [None, 20])
def test_cached_case_is_bit_identical_to_a_fresh_decode(tmp_path, max_side):
    from frozenseg.data.decoded import DecodedCache

    cache = DecodedCache(tmp_path / "cache")
    pairs = _pairs_for_cache(tmp_path)
    fresh = [L.make_case(p, "d", max_side=max_side, cache=False) for p in pairs]
    cold = [L.make_case(p, "d", max_side=max_side, cache=cache) for p in pairs]
    warm = [L.make_case(p, "d", max_side=max_side, cache=cache) for p in pairs]
    assert cache.misses == len(pairs) and cache.hits == len(pairs)
    assert all(_same_case(f, c) and _same_case(f, w) for f, c, w in zip(fresh, cold, warm))
    assert any(c.meta.get("exif_orientation") == 6 for c in warm)
    assert len(list((tmp_path / "cache").glob("??/*.dec"))) == len(pairs)


def test_loaders_use_the_cache_under_cache_root(tmp_path, monkeypatch):
    from frozenseg.data import decoded

    monkeypatch.setenv("FROZENSEG_CACHE", str(tmp_path / "c"))
    root = make_isic(tmp_path / "isic2018")
    calls = []
    real = L.decode_pair
    monkeypatch.setattr(L, "decode_pair", lambda pair, max_side: calls.append(pair.case_id) or real(pair, max_side))
    first = L.load_isic(root, max_side=16)
    second = L.load_isic(root, max_side=16)
    assert len(calls) == 3 and all(_same_case(a, b) for a, b in zip(first, second))
    assert len(list((tmp_path / "c" / "decoded").glob("??/*.dec"))) == 3
    L.load_isic(root)   # another shrink size is another entry
    assert len(calls) == 6
    monkeypatch.setattr(decoded, "code_version", lambda: "changed decode rules")
    L.load_isic(root, max_side=16)
    assert len(calls) == 9


@pytest.mark.parametrize("which", ["image", "mask"])
def test_changed_file_is_not_served_from_the_cache(tmp_path, which):
    import os

    from frozenseg.data.decoded import DecodedCache

    cache = DecodedCache(tmp_path / "cache")
    root = make_isic(tmp_path / "isic2018", ids=(0,))
    (pair,) = L.pairs_isic(root)
    before = L.make_case(pair, "isic", cache=cache)
    target = pair.image if which == "image" else pair.masks[0]
    stat = target.stat()
    if which == "image":
        _save(target, _rgb(99), quality=95)
    else:
        _save(target, _mask255(_box(r0=1, r1=5)))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))   # same mtime: only the content tells
    after = L.make_case(pair, "isic", cache=cache)
    assert cache.misses == 2 and cache.hits == 0
    assert _same_case(after, L.make_case(pair, "isic", cache=False)) and not _same_case(before, after)


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "not an entry"])
def test_unreadable_cache_entry_is_a_miss(tmp_path, caplog, damage):
    from frozenseg.data.decoded import DecodedCache

    cache = DecodedCache(tmp_path / "cache")
    (pair,) = L.pairs_isic(make_isic(tmp_path / "isic2018", ids=(0,)))
    good = L.make_case(pair, "isic", cache=cache)
    (entry,) = (tmp_path / "cache").glob("??/*.dec")
    data = bytearray(entry.read_bytes())
    if damage == "truncated":
        data = data[:100]
    elif damage == "flipped byte":
        data[-200] ^= 0xFF
    else:
        data = bytearray(b"junk")
    entry.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="frozenseg.data.decoded"):
        again = L.make_case(pair, "isic", cache=cache)
    assert "unreadable" in caplog.text and cache.misses == 2
    assert _same_case(good, again) and entry.is_file()
    assert _same_case(good, L.make_case(pair, "isic", cache=cache)) and cache.hits == 1


def test_bad_files_are_refused_and_never_cached(tmp_path):
    from frozenseg.data.decoded import DecodedCache

    cache = DecodedCache(tmp_path / "cache")
    root = make_isic(tmp_path / "isic2018", ids=(0,))
    (pair,) = L.pairs_isic(root)
    pair.masks[0].write_bytes(pair.masks[0].read_bytes()[:40])
    for _ in range(2):
        with pytest.raises(DataError, match="truncated"):
            L.make_case(pair, "isic", cache=cache)
    pair.masks[0].unlink()
    with pytest.raises(DataError, match="file not found"):
        L.make_case(pair, "isic", cache=cache)
    assert not list((tmp_path / "cache").glob("**/*"))
