"""Loaders of the real datasets in their published on-disk layouts, and of a generic image + mask folder.

Every loader returns ``Case`` (2D) or ``Volume`` (3D) records with ``source="real"`` (``"folder"`` for
:func:`load_folder`), sorted by case id in natural order (``spleen_2`` before ``spleen_10``).

Conventions
-----------
* Reading the files (RGB conversion, the mask rule, EXIF orientation, shrinking huge JPEGs) is
  :mod:`frozenseg.data.files`; its conventions hold for every loader.
* Empty masks are kept and flagged ``meta["empty_mask"] = True`` (a warning counts them); they are never
  dropped silently. The flag describes the returned mask: a mask whose foreground vanished when shrunk is
  flagged too, with ``meta["mask_lost_in_shrink"] = True``.
* A corrupt or truncated file, a mask whose size differs from its image, or NaN/inf voxels raise
  ``DataError`` naming the file and the fix. A missing dataset raises ``MissingDatasetError``.
* Decoded 2D cases are cached on disk by file content (:mod:`frozenseg.data.decoded`); ``make_case(...,
  cache=False)`` decodes afresh. A cached case is bit-identical to a fresh decode.
* CT volumes are reoriented to the closest canonical orientation (RAS): array axes are (x: left->right,
  y: posterior->anterior, z: inferior->superior), so axial slices run along the last axis, and
  ``spacing`` is the canonical header zooms in mm. They are windowed at level 40 / width 400 HU.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .. import manifest
from ..errors import ConfigError, DataError
from .decoded import Decoded, DecodedCache
from .files import (CT_LEVEL, CT_WIDTH, IMAGE_EXTS, ORIENTATIONS, FileInfo,  # noqa: F401 (public names re-exported)
                    _image_pixels, _intensity_uint8, _is_nifti, _mask_pixels, _minmax_uint8, _resize_image,
                    _resize_mask, _squeeze2d, _stem, _visible, binarize_mask, check_finite, fit_size, natural_key,
                    read_image, read_mask, read_nifti, to_rgb_uint8, window_ct)
from .types import Case, Pair, Volume  # noqa: F401 (Pair re-exported)

MASK_SUFFIXES = ("", "_mask", "_segmentation")
FOLDER_LAYOUT = ("<root>/images/<stem>.{png,jpg,tif,nii.gz} and <root>/masks/<stem>[_mask|_segmentation]"
                 ".{png,jpg,tif,nii.gz}, one mask per image with matching stems")


# ----------------------------------------------------------------------------- 3D volumes

def load_volume(image_path: Path, label_path: Path, volume_id: str, domain: str, source: str,
                window: tuple[float, float] | None = (CT_LEVEL, CT_WIDTH), dataset: str = "") -> Volume:
    """Read an image + label NIfTI pair into a Volume (RAS, windowed, label > 0)."""
    hu, spacing = read_nifti(image_path)
    check_finite(hu, image_path)
    lab, _ = read_nifti(label_path)
    check_finite(lab, label_path)
    if hu.ndim != 3 or lab.shape != hu.shape:
        raise DataError(label_path, f"label shape {lab.shape} differs from image shape {hu.shape} "
                        f"({image_path.name})", "use the label volume that belongs to this image")
    mask = lab > 0
    image = _intensity_uint8(hu, window)
    meta = {"image_path": str(image_path), "label_path": str(label_path), "orientation": "RAS",
            "dataset": dataset, "empty_mask": not bool(mask.any())}
    return Volume(volume_id=volume_id, domain=domain, image=image, mask=mask,
                  spacing=tuple(spacing), source=source, meta=meta)


# ----------------------------------------------------------------------------- 2D case building

def _describe(path: Path, info: FileInfo) -> str:
    """'name (EXIF orientation 6: rotate 90 degrees clockwise; stored (r, c), displayed (c, r))'."""
    tag = "no EXIF orientation" if info.orientation == 1 else \
        f"EXIF orientation {info.orientation}: {ORIENTATIONS[info.orientation]}"
    return f"{path.name} ({tag}; stored {info.stored}, displayed {info.size})"


def _check_aligned(image_path: Path, image: FileInfo, mask_path: Path, mask: FileInfo) -> None:
    """Raise DataError unless the mask lines up with its image as displayed (rules in the module docstring)."""
    same_display, same_stored = mask.size == image.size, mask.stored == image.stored
    if image.orientation == mask.orientation or (same_display and not same_stored):
        if same_display:
            return
        raise DataError(mask_path, f"mask size {mask.size} differs from image size {image.size} of "
                        f"{image_path.name} (rows, cols)",
                        "use the mask that belongs to this image, or resize it with nearest-neighbour")
    pair = f"image {_describe(image_path, image)}, mask {_describe(mask_path, mask)}"
    fix = ("make the two agree: give the mask the image's EXIF orientation tag if it was drawn on the image's "
           "stored pixels, or save both in display orientation without the tag (PIL: ImageOps.exif_transpose) "
           "so that they share one pixel grid")
    if same_stored and not same_display:
        raise DataError(mask_path, f"mask size {mask.size} differs from image size {image.size} after applying "
                        f"EXIF orientations ({pair}): the mask matches the image's stored, un-rotated pixel grid, "
                        "not the displayed image", fix)
    if same_display:
        raise DataError(mask_path, f"image and mask carry different EXIF orientations ({pair}) and their sizes "
                        "cannot tell whether the mask was drawn on the displayed or on the stored image", fix)
    raise DataError(mask_path, f"mask size {mask.size} differs from image size {image.size} of {image_path.name} "
                    f"(rows, cols; {pair})",
                    "use the mask that belongs to this image, or resize it with nearest-neighbour")


def _united_mask(image_path: Path, image: FileInfo, mask_paths: tuple[Path, ...], size: tuple[int, int],
                 max_side: int | None) -> tuple[np.ndarray, bool]:
    """Read, check, resize to ``size`` and unite the masks of one case; also whether any had foreground."""
    mask, any_fg = np.zeros(size, bool), False
    for p in mask_paths:
        m, info = _mask_pixels(p, max_side)
        _check_aligned(image_path, image, Path(p), info)
        any_fg = any_fg or bool(m.any())
        mask |= _resize_mask(m, size)
    return mask, any_fg


def decode_pair(pair: Pair, max_side: int | None = None) -> Decoded:
    """Decode one pair: display-oriented image and united mask, shrunk to ``max_side`` (no cache)."""
    image, info = _image_pixels(pair.image, max_side)
    size = fit_size(*info.size, max_side)
    mask, any_fg = _united_mask(pair.image, info, pair.masks, size, max_side)
    return Decoded(image=_resize_image(image, size), mask=mask, orig_size=info.size,
                   orientation=info.orientation, mask_before_shrink=any_fg)


def _case_meta(pair: Pair, dec: Decoded, max_side: int | None) -> dict:
    """meta of a decoded case: paths, dataset, full size, shrink scale and the empty-mask flags."""
    meta = {"image_path": str(pair.image), "mask_paths": [str(p) for p in pair.masks], "dataset": pair.dataset,
            "orig_size": tuple(dec.orig_size), "empty_mask": not bool(dec.mask.any())}
    if meta["empty_mask"] and dec.mask_before_shrink:
        meta["mask_lost_in_shrink"] = True
    if dec.orientation != 1:
        meta["exif_orientation"] = dec.orientation
    if max_side:
        meta["scale"] = min(1.0, max_side / max(dec.orig_size))
    return meta


def make_case(pair: Pair, domain: str, source: str = "real", max_side: int | None = None,
              cache: DecodedCache | bool = True) -> Case:
    """Read one image + mask pair into a Case (optionally shrunk to ``max_side``) through the decoded cache."""
    max_side = int(max_side) if max_side else None
    if cache is False:
        dec = decode_pair(pair, max_side)
    else:
        dec = (DecodedCache() if cache is True else cache).get(pair, max_side, decode_pair)
    meta = _case_meta(pair, dec, max_side)
    try:
        return Case(case_id=pair.case_id, domain=domain, image=dec.image, mask=dec.mask, source=source, meta=meta)
    except DataError as exc:
        raise DataError(pair.masks[0] if pair.masks else pair.image, exc.problem, exc.fix) from exc


def _select(items: list, ids: Iterable[str] | None, get_id: Callable, where: Path) -> list:
    """Keep the items whose id is in ``ids`` (all when None); unknown ids raise DataError."""
    items = sorted(items, key=lambda it: natural_key(get_id(it)))
    if ids is None:
        return items
    wanted = list(dict.fromkeys(ids))
    known = {get_id(it): it for it in items}
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise DataError(where, f"{len(unknown)} requested case id(s) not found, e.g. {unknown[:3]}",
                        "choose ids from list_pairs() / the loader's full output")
    return [known[i] for i in sorted(wanted, key=natural_key)]


def _warn_empty(records: list, dataset: str) -> None:
    """Warn (once per load) how many records have an empty mask; they stay in the list, flagged."""
    empty = [r for r in records if r.meta.get("empty_mask")]
    if empty:
        ids = [getattr(r, "case_id", None) or r.volume_id for r in empty]
        warnings.warn(f"{dataset}: {len(empty)} of {len(records)} cases have an empty mask, e.g. {ids[:3]}; "
                      "kept with meta['empty_mask']=True", stacklevel=3)


def _load_pairs(pairs: list[Pair], domain: str, source: str, ids, max_side, where: Path, dataset: str) -> list[Case]:
    """Select, read and flag a list of pairs."""
    chosen = _select(pairs, ids, lambda p: p.case_id, where)
    cases = [make_case(p, domain, source, max_side) for p in chosen]
    _warn_empty(cases, dataset)
    return cases


def _folder(key: str, root: str | Path | None) -> Path:
    """Dataset folder: ``root`` if given (its layout checked), else the manifest target under the data root."""
    if root is None:
        return manifest.locate(key)
    return manifest.require(key, root)


def _unpaired_error(where: Path, what: str, names: list[str]) -> DataError:
    """DataError listing a few unpaired files and the expected layout."""
    return DataError(where, f"{len(names)} {what}, e.g. {sorted(names, key=natural_key)[:5]}",
                     f"add the missing files or remove the unpaired ones; expected layout: {FOLDER_LAYOUT}")


# ----------------------------------------------------------------------------- pair listings per dataset

ISIC_PARTS = {"training": "Training", "validation": "Validation", "test": "Test"}   # the challenge's own splits


def pairs_isic(root: str | Path | None = None, part: str = "training") -> list[Pair]:
    """ISIC 2018 Task 1 pairs of one official part (training, validation, test):
    ``ISIC2018_Task1-2_<Part>_Input/ISIC_*.jpg`` + ``ISIC2018_Task1_<Part>_GroundTruth/<id>_segmentation.png``."""
    if part not in ISIC_PARTS:
        raise ConfigError(f"unknown ISIC 2018 part {part!r}; choose from {list(ISIC_PARTS)}")
    name = ISIC_PARTS[part]
    folder = _folder("isic2018_task1" if part == "training" else "isic2018_task1_eval", root)
    gt = folder / f"ISIC2018_Task1_{name}_GroundTruth"
    pairs, missing = [], []
    for img in _visible(folder.glob(f"ISIC2018_Task1-2_{name}_Input/ISIC_*.jpg")):
        mask = gt / f"{img.stem}_segmentation.png"
        (pairs.append(Pair(img.stem, img, (mask,), "isic2018_task1")) if mask.is_file() else missing.append(img.name))
    if missing:
        raise DataError(gt, f"{len(missing)} ISIC image(s) have no <id>_segmentation.png mask, e.g. {missing[:3]}",
                        f"unzip ISIC2018_Task1_{name}_GroundTruth.zip completely into the dataset folder")
    return pairs


def pairs_kvasir(root: str | Path | None = None) -> list[Pair]:
    """Kvasir-SEG pairs: ``Kvasir-SEG/images/*.jpg`` + ``Kvasir-SEG/masks/*.jpg`` with the same name."""
    folder = _folder("kvasir_seg", root) / "Kvasir-SEG"
    images = {p.stem: p for p in _visible((folder / "images").glob("*.jpg"))}
    masks = {p.stem: p for p in _visible((folder / "masks").glob("*.jpg"))}
    if set(images) != set(masks):
        raise _unpaired_error(folder, "Kvasir-SEG files without a partner (images/ vs masks/)",
                              sorted(set(images) ^ set(masks)))
    return [Pair(s, images[s], (masks[s],), "kvasir_seg") for s in images]


def pairs_montgomery(root: str | Path | None = None) -> list[Pair]:
    """Montgomery pairs: ``MontgomerySet/CXR_png/MCUCXR_*.png`` + left and right lung masks (united)."""
    folder = _folder("montgomery", root) / "MontgomerySet"
    pairs = []
    for img in _visible(folder.glob("CXR_png/MCUCXR_*.png")):
        masks = tuple(folder / "ManualMask" / side / img.name for side in ("leftMask", "rightMask"))
        for m in masks:
            if not m.is_file():
                raise DataError(m, f"lung mask of {img.name} is missing",
                                "unzip NLM-MontgomeryCXRSet.zip completely (ManualMask/leftMask and rightMask)")
        pairs.append(Pair(img.stem, img, masks, "montgomery"))
    return pairs


def pairs_shenzhen(root: str | Path | None = None) -> list[Pair]:
    """Shenzhen pairs: ``ChinaSet_AllFiles/CXR_png/CHNCXR_*.png`` + ``mask/<stem>_mask.png`` (any depth)."""
    folder = _folder("shenzhen", root)
    masks = {p.name[: -len("_mask.png")]: p for p in _visible(folder.glob("**/CHNCXR_*_mask.png"))}
    pairs, skipped = [], []
    for img in _visible(folder.glob("ChinaSet_AllFiles/CXR_png/CHNCXR_*.png")):
        if img.stem in masks:
            pairs.append(Pair(img.stem, img, (masks[img.stem],), "shenzhen"))
        else:
            skipped.append(img.stem)
    if skipped:
        warnings.warn(f"shenzhen: {len(skipped)} images have no lung mask and are skipped, e.g. "
                      f"{sorted(skipped, key=natural_key)[:3]} (the public mask release covers 566 of 662)",
                      stacklevel=2)
    return pairs


def pairs_msd_spleen(root: str | Path | None = None) -> list[tuple[str, Path, Path]]:
    """MSD spleen (volume_id, image, label): ``Task09_Spleen/imagesTr/spleen_*.nii.gz`` + ``labelsTr/``."""
    folder = _folder("msd_spleen", root) / "Task09_Spleen"
    out = []
    for img in _visible(folder.glob("imagesTr/spleen_*.nii.gz")):
        lab = folder / "labelsTr" / img.name
        if not lab.is_file():
            raise DataError(lab, f"label volume of {img.name} is missing",
                            "extract Task09_Spleen.tar completely (imagesTr/ and labelsTr/)")
        out.append((_stem(img), img, lab))
    return out


# ----------------------------------------------------------------------------- public loaders

def load_isic(root: str | Path | None = None, *, ids: Iterable[str] | None = None,
              max_side: int | None = None, part: str = "training") -> list[Case]:
    """ISIC 2018 Task 1 images with lesion masks (domain "isic") of one official part (default: training)."""
    key = "isic2018_task1" if part == "training" else "isic2018_task1_eval"
    folder = _folder(key, root)
    return _load_pairs(pairs_isic(folder, part), "isic", "real", ids, max_side, folder, f"isic2018_task1 ({part})")


def load_kvasir(root: str | Path | None = None, *, ids: Iterable[str] | None = None,
                max_side: int | None = None) -> list[Case]:
    """Kvasir-SEG polyp images with masks (domain "kvasir")."""
    folder = _folder("kvasir_seg", root)
    return _load_pairs(pairs_kvasir(folder), "kvasir", "real", ids, max_side, folder, "kvasir_seg")


def load_montgomery(root: str | Path | None = None, *, ids: Iterable[str] | None = None,
                    max_side: int | None = None) -> list[Case]:
    """Montgomery chest X-rays with left + right lung masks united (domain "cxr")."""
    folder = _folder("montgomery", root)
    return _load_pairs(pairs_montgomery(folder), "cxr", "real", ids, max_side, folder, "montgomery")


def load_shenzhen(root: str | Path | None = None, *, ids: Iterable[str] | None = None,
                  max_side: int | None = None) -> list[Case]:
    """Shenzhen chest X-rays that have a lung mask (domain "cxr"); unmasked images are skipped with a warning."""
    folder = _folder("shenzhen", root)
    return _load_pairs(pairs_shenzhen(folder), "cxr", "real", ids, max_side, folder, "shenzhen")


def load_cxr(root: str | Path | None = None, *, ids: Iterable[str] | None = None,
             max_side: int | None = None) -> list[Case]:
    """Montgomery + Shenzhen united (domain "cxr"); both live in the same folder (manifest target ``cxr``)."""
    folder = _folder("montgomery", root)
    pairs = pairs_montgomery(folder) + pairs_shenzhen(folder)
    return _load_pairs(pairs, "cxr", "real", ids, max_side, folder, "cxr")


def load_msd_spleen(root: str | Path | None = None, *, ids: Iterable[str] | None = None) -> list[Volume]:
    """MSD Task09 spleen CT volumes (RAS, L40/W400 uint8, label > 0; domain "spleen")."""
    folder = _folder("msd_spleen", root)
    chosen = _select(pairs_msd_spleen(folder), ids, lambda t: t[0], folder)
    vols = [load_volume(img, lab, vid, "spleen", "real", dataset="msd_spleen") for vid, img, lab in chosen]
    _warn_empty(vols, "msd_spleen")
    return vols


# ----------------------------------------------------------------------------- generic folder

def _index(folder: Path) -> dict[str, Path]:
    """Map stem -> file for supported files in ``folder``; two files with one stem raise DataError."""
    out: dict[str, Path] = {}
    for p in sorted(_visible(folder.iterdir())):
        if not p.is_file() or not (_is_nifti(p) or p.suffix.lower() in IMAGE_EXTS):
            continue
        stem = _stem(p)
        if stem in out:
            raise DataError(p, f"two files share the stem {stem!r} ({out[stem].name}, {p.name})",
                            "keep one file per case in each folder")
        out[stem] = p
    return out


def pairs_folder(root: str | Path) -> list[Pair]:
    """Pairs of a generic folder: ``images/<stem>.*`` with ``masks/<stem>[_mask|_segmentation].*``."""
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise DataError(root, "expected the sub-folders images/ and masks/",
                        f"arrange the files as {FOLDER_LAYOUT}")
    images, masks = _index(img_dir), _index(mask_dir)
    if not images:
        raise DataError(img_dir, "no PNG/JPG/TIF/BMP/NIfTI images found", f"arrange the files as {FOLDER_LAYOUT}")
    pairs, lonely, used = [], [], set()
    for stem, img in images.items():
        hit = next((stem + suf for suf in MASK_SUFFIXES if stem + suf in masks), None)
        if hit is None:
            lonely.append(img.name)
            continue
        used.add(hit)
        pairs.append(Pair(stem, img, (masks[hit],), "folder"))
    if lonely:
        raise _unpaired_error(mask_dir, "image(s) without a mask in masks/", lonely)
    extra = [masks[s].name for s in masks if s not in used]
    if extra:
        raise _unpaired_error(img_dir, "mask(s) without an image in images/", extra)
    return pairs


def _folder_record(pair: Pair, domain: str, max_side: int | None, window) -> Case | Volume:
    """A Case for 2D files (2D NIfTI included) or a Volume for a 3D NIfTI image."""
    if not _is_nifti(pair.image):
        return make_case(pair, domain, "folder", max_side)
    data, spacing = read_nifti(pair.image)
    check_finite(data, pair.image)
    if data.ndim == 3 and data.shape[2] > 1:
        return load_volume(pair.image, pair.masks[0], pair.case_id, domain, "folder", window, "folder")
    image = to_rgb_uint8(_intensity_uint8(_squeeze2d(data, pair.image), window))
    max_side = int(max_side) if max_side else None
    info = FileInfo(1, image.shape[:2], image.shape[:2])
    size = fit_size(*info.size, max_side)
    mask, any_fg = _united_mask(pair.image, info, pair.masks, size, max_side)
    dec = Decoded(_resize_image(image, size), mask, info.size, 1, any_fg)
    meta = _case_meta(pair, dec, max_side)
    return Case(pair.case_id, domain, dec.image, dec.mask, source="folder", spacing=tuple(spacing[:2]), meta=meta)


def folder_domain(root: str | Path) -> str:
    """A domain name for a folder from its own name: characters other than letters, digits, _ and - become _
    ("/data/my scans" -> "my_scans"), so a folder's name is never an error."""
    name = re.sub(r"[^A-Za-z0-9_\-]+", "_", Path(root).resolve().name).strip("_-")
    return name or "folder"


def load_folder(root: str | Path, domain: str, *, ids: Iterable[str] | None = None, max_side: int | None = None,
                window: tuple[float, float] | None = None) -> list[Case | Volume]:
    """Onboard a new domain from ``root/images`` + ``root/masks`` (PNG/JPG/TIF/BMP, 2D or 3D NIfTI).

    ``window`` = (level, width) applies a CT window to NIfTI images; by default they are scaled between
    their 0.5 and 99.5 percentiles. 3D NIfTI images become Volumes, everything else Cases.
    """
    if not isinstance(domain, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", domain):
        raise ConfigError(f"domain name must be a simple identifier (letters, digits, _ or -), got {domain!r}")
    root = Path(root)
    chosen = _select(pairs_folder(root), ids, lambda p: p.case_id, root)
    records = [_folder_record(p, domain, max_side, window) for p in chosen]
    _warn_empty(records, f"folder {root}")
    return records


def load_spleen_silver(root: str | Path | None = None) -> list[Volume]:
    """The abdominal CT folder with TotalSegmentator's spleen masks (manifest ``spleen_ct_silver``; silver-standard
    labels, a model's output, not manual) as spleen Volumes (CT window L40/W400), each tagged with its scan group
    (volumes cut from one scan share a group, so a split never puts them on both sides)."""
    entry = manifest.get_entry("spleen_ct_silver")
    folder = _folder("spleen_ct_silver", root)
    vols = load_folder(folder, "spleen", window=(CT_LEVEL, CT_WIDTH))
    for v in vols:
        if not isinstance(v, Volume):
            raise DataError(v.meta.get("image_path"), "expected a 3D CT volume in the spleen CT folder",
                            "keep only NIfTI volumes with their masks in images/ and masks/")
        v.source = "real"
        v.meta.update(dataset="spleen_ct_silver", labels=entry.labels, group=entry.groups.get(v.volume_id, v.volume_id))
    return vols


def load_cxr_lungs(root: str | Path | None = None, *, ids: Iterable[str] | None = None,
                   max_side: int | None = None) -> list[Case]:
    """The chest X-ray folder with manual lung masks (manifest ``cxr_lungs``: Montgomery + Shenzhen images resized
    to 512 px without keeping the aspect ratio, both lungs in one mask; not the official layout) as "cxr" Cases."""
    folder = _folder("cxr_lungs", root)
    cases = load_folder(folder, "cxr", ids=ids, max_side=max_side)
    for c in cases:
        c.source = "real"
        c.meta.update(dataset="cxr_lungs")
    return cases


def load_spleen_mr(root: str | Path | None = None) -> list[Volume]:
    """The abdominal MR folder with manual spleen masks (manifest ``spleen_mr``: CHAOS T2-SPIR, intensities
    normalised per volume, scaled to uint8 between the volume's 0.5 and 99.5 percentiles) as spleen Volumes; each
    volume is one patient, so its own scan group."""
    entry = manifest.get_entry("spleen_mr")
    folder = _folder("spleen_mr", root)
    vols = load_folder(folder, "spleen")
    for v in vols:
        if not isinstance(v, Volume):
            raise DataError(v.meta.get("image_path"), "expected a 3D MR volume in the spleen MR folder",
                            "keep only NIfTI volumes with their masks in images/ and masks/")
        v.source = "real"
        v.meta.update(dataset="spleen_mr", labels=entry.labels, modality="MR",
                      group=entry.groups.get(v.volume_id, v.volume_id))
    return vols


LOADERS: dict[str, Callable[..., list]] = {
    "isic": load_isic, "spleen": load_msd_spleen, "kvasir": load_kvasir, "cxr": load_cxr,
}
DATASET_KEYS: dict[str, tuple[str, ...]] = {
    "isic": ("isic2018_task1",), "spleen": ("msd_spleen",), "kvasir": ("kvasir_seg",),
    "cxr": ("montgomery", "shenzhen"),
}
# Folders that stand in for a domain's dataset when it is absent (frozenseg.data.load_domain): the silver CT folder
# for MSD Task09, the resized chest X-ray folder for Montgomery + Shenzhen.
STAND_INS: dict[str, tuple[str, ...]] = {"spleen": ("spleen_ct_silver",), "cxr": ("cxr_lungs",)}
# Datasets a domain reads besides its own when they are present: ISIC's official test part, the stand-ins, and the
# MR spleen sample (notebook 03's second spleen sample in the sample profile).
EXTRA_KEYS: dict[str, tuple[str, ...]] = {"isic": ("isic2018_task1_eval",), "spleen": ("spleen_ct_silver", "spleen_mr"),
                                          "cxr": ("cxr_lungs",)}


def load_real(domain: str, root: str | Path | None = None, **kwargs) -> list:
    """Real data of one study domain ("isic", "spleen", "kvasir", "cxr") through its loader."""
    if domain not in LOADERS:
        raise ConfigError(f"unknown domain {domain!r}; real loaders exist for {sorted(LOADERS)}; "
                          "use load_folder(root, domain) for a new one")
    return LOADERS[domain](root, **kwargs)
