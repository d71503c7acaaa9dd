"""Tiny fake datasets in the real archives' layouts: one archive per download part of each data_manifest.yaml entry.

Each archive holds the part's top-level folder (its ``member``) exactly as the real archive unpacks: ISIC 2018 Task 1
training, validation and test inputs and ground truths, MSD Task09 spleen NIfTI, the CT and MR spleen folders,
Kvasir-SEG, Montgomery (left and right lung masks), Shenzhen (images, and the separate lung-mask release, one image
unmasked) and the resized chest X-ray folder.
Images are a textured background with one bright ellipse, the mask is the ellipse: the shapes of real data, no
content (any Dice measured on them means nothing).
"""
from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.files import natural_key

# Kvasir-SEG: one image of PraNet's test list (so the 900/100 split has a test part) and four train images
KVASIR_TRAIN = ("cju0qkwl35piu0993l0dewei2", "cju0qoxqj9q6s0835b43399p4", "cju0roawvklrq0799vmjorwfv",
                "cju0rx1idathl0835detmsp84")
ISIC_IDS = {"Training": (1, 2, 3, 4), "Validation": (101,), "Test": (201,)}
MSD_IDS, CT_IDS = ("spleen_2", "spleen_3", "spleen_10"), ("ts_ct_full", "ts_ct_sm", "ts_dicom_ct")
MONTGOMERY_IDS, SHENZHEN_IDS, SHENZHEN_MASKED = (1, 2), (1, 2, 3), (1, 3)
CXR_LUNGS_IDS, MR_IDS = ("MCUCXR_0001_0", "CHNCXR_0001_0", "CHNCXR_0002_1"), ("chaos_mr_01", "chaos_mr_03")
VOLUME_SHAPE, SPACING = (40, 40, 4), (2.0, 2.0, 5.0)


def shape_case(seed: int, h: int, w: int, grey: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (H, W, 3) or (H, W), mask bool): noise texture with one brighter ellipse, the ellipse as mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    base = rng.integers(40, 120, (h, w) if grey else (h, w, 3)).astype(np.int16)
    lift = rng.integers(60, 110) if grey else rng.integers(40, 110, 3)
    img = base + (mask[..., None] if not grey else mask) * lift
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _save(path: Path, arr: np.ndarray, **kw) -> None:
    """Write an image with PIL (format from the suffix)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


def _seed(name: str) -> int:
    """A stable seed from a case name."""
    import hashlib

    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def _isic(part: str, truth: bool) -> Callable[[Path], None]:
    """Writer of one ISIC 2018 Task 1 folder (input JPEGs, or the ``<id>_segmentation.png`` masks)."""
    def write(folder: Path) -> None:
        for i in ISIC_IDS[part]:
            stem = f"ISIC_{i:07d}"
            img, mask = shape_case(_seed(stem), 96, 128)
            if truth:
                _save(folder / f"{stem}_segmentation.png", mask.astype(np.uint8) * 255)
            else:
                _save(folder / f"{stem}.jpg", img, quality=92)
    return write


def _kvasir(folder: Path) -> None:
    """Kvasir-SEG: images/<name>.jpg and masks/<name>.jpg (JPEG masks, binarised at 128 by the loader)."""
    from ..data import pranet_test_ids

    for name in (*KVASIR_TRAIN, pranet_test_ids()[0]):
        img, mask = shape_case(_seed(name), 100, 120)
        _save(folder / "images" / f"{name}.jpg", img, quality=90)
        _save(folder / "masks" / f"{name}.jpg", mask.astype(np.uint8) * 255, quality=95)


def _lungs(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grey chest image, left lung mask, right lung mask)."""
    img, mask = shape_case(seed, 128, 128, grey=True)
    left, right = mask.copy(), mask.copy()
    left[:, 64:], right[:, :64] = False, False
    return img, left, right


def _montgomery(folder: Path) -> None:
    """MontgomerySet: CXR_png/MCUCXR_*.png with ManualMask/leftMask and rightMask of the same name."""
    for i in MONTGOMERY_IDS:
        name = f"MCUCXR_{i:04d}_0.png"
        img, left, right = _lungs(_seed(name))
        _save(folder / "CXR_png" / name, img)
        _save(folder / "ManualMask" / "leftMask" / name, left.astype(np.uint8) * 255)
        _save(folder / "ManualMask" / "rightMask" / name, right.astype(np.uint8) * 255)


def _shenzhen_images(folder: Path) -> None:
    """ChinaSet_AllFiles/CXR_png/CHNCXR_*.png (one without a mask in the separate mask release)."""
    for i in SHENZHEN_IDS:
        name = f"CHNCXR_{i:04d}_{i % 2}"
        _save(folder / "CXR_png" / f"{name}.png", _lungs(_seed(name))[0])


def _shenzhen_masks(folder: Path) -> None:
    """The lung-mask release: mask/<stem>_mask.png (both lungs in one file)."""
    for i in SHENZHEN_MASKED:
        name = f"CHNCXR_{i:04d}_{i % 2}"
        _, left, right = _lungs(_seed(name))
        _save(folder / f"{name}_mask.png", (left | right).astype(np.uint8) * 255)


def _cxr_lungs(folder: Path) -> None:
    """The resized chest X-ray folder: images/<stem>.png and masks/<stem>.png (both lungs in one 0/255 mask)."""
    for name in CXR_LUNGS_IDS:
        img, left, right = _lungs(_seed(name))
        _save(folder / "images" / f"{name}.png", img)
        _save(folder / "masks" / f"{name}.png", (left | right).astype(np.uint8) * 255)


def _volume(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(CT-like volume in HU, spleen label): an ellipsoid of soft tissue in a few middle slices."""
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[:VOLUME_SHAPE[0], :VOLUME_SHAPE[1], :VOLUME_SHAPE[2]]
    c = rng.uniform(14, 26, 2)
    lab = ((x - c[0]) / 8) ** 2 + ((y - c[1]) / 6) ** 2 + ((z - 1.5) / 1.2) ** 2 <= 1
    hu = rng.normal(-60, 40, VOLUME_SHAPE) + lab * 140
    return hu.astype(np.int16), lab.astype(np.uint8)


def _nifti_pairs(ids, images: str, labels: str) -> Callable[[Path], None]:
    """Writer of NIfTI image/label pairs ``<images>/<id>.nii.gz`` and ``<labels>/<id>.nii.gz``."""
    def write(folder: Path) -> None:
        import nibabel as nib

        affine = np.diag([*SPACING, 1.0])
        for vid in ids:
            hu, lab = _volume(_seed(vid))
            for sub, arr in ((images, hu), (labels, lab)):
                (folder / sub).mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(arr, affine), str(folder / sub / f"{vid}.nii.gz"))
    return write


# archive member (the top-level folder a real archive unpacks to) -> writer of its contents
MEMBERS: dict[str, Callable[[Path], None]] = {
    **{f"ISIC2018_Task1-2_{p}_Input/": _isic(p, False) for p in ISIC_IDS},
    **{f"ISIC2018_Task1_{p}_GroundTruth/": _isic(p, True) for p in ISIC_IDS},
    "Task09_Spleen/": _nifti_pairs(MSD_IDS, "imagesTr", "labelsTr"),
    "Kvasir-SEG/": _kvasir,
    "MontgomerySet/": _montgomery,
    "ChinaSet_AllFiles/": _shenzhen_images,
    "mask/": _shenzhen_masks,
}
# entries whose archive has no top-level folder: key -> writer of the target folder's contents
NO_MEMBER: dict[str, Callable[[Path], None]] = {"spleen_ct_silver": _nifti_pairs(CT_IDS, "images", "masks"),
                                                "spleen_mr": _nifti_pairs(MR_IDS, "images", "masks"),
                                                "cxr_lungs": _cxr_lungs}


def write_archive(out: Path, fmt: str, member: str | None, writer: Callable[[Path], None], work: Path) -> Path:
    """Write a part's files under ``work/<member>`` and pack them into ``out`` (zip or tar) as the real archive."""
    src = work / (member or "").rstrip("/") if member else work
    writer(src)
    files = sorted((p for p in work.rglob("*") if p.is_file()), key=lambda p: natural_key(str(p)))
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "zip":
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
            for f in files:
                zf.write(f, f.relative_to(work).as_posix())
    elif fmt == "tar":
        with tarfile.open(out, "w") as tf:
            for f in files:
                tf.add(f, f.relative_to(work).as_posix())
    else:
        raise ValueError(f"no fake archive for format {fmt!r}")
    return out
