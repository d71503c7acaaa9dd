"""Loaders of the real datasets in their published on-disk layouts, and of a generic image + mask folder.

Every loader returns ``Case`` (2D) or ``Volume`` (3D) records with ``source="real"`` (``"folder"`` for
:func:`load_folder`), sorted by case id in natural order (``spleen_2`` before ``spleen_10``).

Conventions
-----------
* Images become (H, W, 3) uint8 RGB: grey is replicated, alpha is dropped, palettes are expanded, CMYK is
  converted, 16-bit / 32-bit / float images are min-max scaled to 0..255. 16-bit colour PNGs (RGB, RGBA,
  grey + alpha) are read at their full 16 bits and min-max scaled too (Pillow alone keeps only the high byte).
* Mask rule (:func:`binarize_mask`): a JPEG mask (lossy, e.g. Kvasir-SEG) is foreground where the value
  is > 127 (half of the dtype range for wider dtypes), so compression noise never counts. A lossless mask
  (PNG, TIF, BMP, NIfTI) whose maximum is < 128 is a label map (0/1, or small class ids): foreground is
  any value > 0; one whose maximum is >= 128 (0/255, 0/65535, anti-aliased edges) is foreground above
  half its maximum. Colour masks are reduced to the maximum over their RGB channels first.
* Orientation: every file is returned in its own display orientation, i.e. its EXIF orientation tag is
  applied (``PIL.ImageOps.exif_transpose``), to images and masks alike. A mask must line up with its image
  *as displayed*. When the two carry different tags this is checked from the sizes: if the displayed sizes
  agree and the stored ones do not (a rotated photo with a mask drawn on the displayed picture), the pair
  is read; if the stored sizes agree and the displayed ones do not (a mask drawn on the image's un-rotated
  pixels), or if both agree so that the sizes cannot tell (a 180-degree or mirror tag, or a square image),
  ``DataError`` names both files and both tags instead of guessing an alignment.
* Size: ``max_side`` shrinks the longer side to at most that many pixels (image bilinear, masks nearest,
  each mask file resized before they are united). JPEGs are then decoded at reduced size with PIL's
  ``draft()`` (DCT scaling by 1/2, 1/4 or 1/8, never below the target size) and resized from there, so a huge
  JPEG is never decoded at full size. A file whose decoded size is still above PIL's decompression-bomb
  limit (2 x ``PIL.Image.MAX_IMAGE_PIXELS``) raises ``DataError`` with its pixel size and the fix.
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

import math
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from .. import manifest
from ..errors import ConfigError, DataError
from .decoded import Decoded, DecodedCache
from .types import Case, Volume

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_EXTS = (".nii.gz", ".nii")
LOSSY_EXTS = (".jpg", ".jpeg")
MASK_SUFFIXES = ("", "_mask", "_segmentation")
CT_LEVEL, CT_WIDTH = 40.0, 400.0
FOLDER_LAYOUT = ("<root>/images/<stem>.{png,jpg,tif,nii.gz} and <root>/masks/<stem>[_mask|_segmentation]"
                 ".{png,jpg,tif,nii.gz}, one mask per image with matching stems")
DECODE_FIX = "re-download or re-export this file, or remove it (and its mask) from the dataset folder"
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError, zlib.error)
DRAFTABLE = ("JPEG", "MPO")   # formats PIL can decode at 1/2, 1/4 or 1/8 size
# 16-bit colour PNGs: Pillow keeps the high byte; decoding again with these raw modes yields the low byte
# (RGB/RGBA), or both bytes of grey + alpha as R, G (LA).
WIDE_PNG_RAWMODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}
ORIENTATIONS = {1: "none", 2: "mirror left-right", 3: "rotate 180 degrees", 4: "mirror top-bottom",
                5: "mirror + rotate 90 degrees counter-clockwise", 6: "rotate 90 degrees clockwise",
                7: "mirror + rotate 90 degrees clockwise", 8: "rotate 90 degrees counter-clockwise"}


@dataclass(frozen=True)
class FileInfo:
    """Geometry of one decoded 2D file: EXIF orientation, stored and displayed full size (rows, cols)."""

    orientation: int
    stored: tuple[int, int]
    size: tuple[int, int]


@dataclass(frozen=True)
class Pair:
    """Paths of one labelled 2D case (several mask files are united, e.g. left + right lung)."""

    case_id: str
    image: Path
    masks: tuple[Path, ...]
    dataset: str


# ----------------------------------------------------------------------------- small helpers

def natural_key(text: str) -> list:
    """Sort key that orders embedded numbers numerically."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _stem(path: Path) -> str:
    """File name without its image or NIfTI extension."""
    name = path.name
    for ext in NIFTI_EXTS + IMAGE_EXTS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _visible(paths: Iterable[Path]) -> list[Path]:
    """Drop hidden and macOS resource-fork files (``._*``, ``.DS_Store``) and Thumbs.db."""
    return [p for p in paths if not p.name.startswith(".") and p.name.lower() != "thumbs.db"]


def _is_nifti(path: Path) -> bool:
    """True for .nii / .nii.gz."""
    return path.name.lower().endswith(NIFTI_EXTS)


# ----------------------------------------------------------------------------- pixels

def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """(H,W), (H,W,1), (H,W,2), (H,W,3) or (H,W,4) of any dtype -> (H,W,3) uint8 (min-max for non-uint8)."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (1, 2):
        a = a[..., 0]
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise DataError(None, f"cannot make an RGB image from an array of shape {a.shape}",
                        "pass (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = _minmax_uint8(a)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a)


def _minmax_uint8(a: np.ndarray) -> np.ndarray:
    """Scale an array linearly so its min becomes 0 and its max 255 (a constant array becomes 0)."""
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise DataError(None, "image holds NaN or inf values", "repair the file or exclude it")
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def window_ct(hu: np.ndarray, level: float = CT_LEVEL, width: float = CT_WIDTH) -> np.ndarray:
    """CT intensities (HU) -> uint8 through the window [level - width/2, level + width/2]."""
    lo = level - width / 2.0
    scaled = (np.clip(np.asarray(hu, np.float32), lo, lo + width) - lo) * (255.0 / width)
    return np.round(scaled).astype(np.uint8)


def binarize_mask(values: np.ndarray, lossy: bool = False) -> np.ndarray:
    """Mask values -> bool by the module's rule (JPEG: > half range; lossless: label map or > max/2)."""
    a = np.asarray(values)
    if a.dtype == bool:
        return a.copy()
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])   # = max over RGB, without numpy's slow axis=2
    elif a.ndim == 3 and a.shape[2] in (1, 2):
        a = a[..., 0]
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise DataError(None, "mask holds NaN or inf values", "repair the mask file or exclude it")
    if lossy:
        half = np.iinfo(a.dtype).max // 2 if np.issubdtype(a.dtype, np.integer) else 0.5
        return a > half
    top = float(a.max()) if a.size else 0.0
    return a > (0 if top < 128 else top / 2.0)


def _check_truncation_setting() -> None:
    """Refuse to run with PIL's LOAD_TRUNCATED_IMAGES on: truncated files would load silently."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DataError(None, "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, so truncated files would load "
                        "silently", "do not set it; frozenseg needs it False to detect truncated files")


def fit_size(rows: int, cols: int, max_side: int | None) -> tuple[int, int]:
    """(rows, cols) shrunk so the longer side is at most ``max_side`` (unchanged when it already fits)."""
    if not max_side or max(rows, cols) <= max_side:
        return rows, cols
    scale = max_side / max(rows, cols)
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def _open_lazy(fh: IO[bytes]) -> Image.Image:
    """Open an image header without decoding pixels; PIL's pixel limit is applied later, after draft()."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(fh)
        except Image.DecompressionBombError:
            pass
    fh.seek(0)
    prefix = fh.read(16)
    Image.init()
    for fmt in Image.ID:   # as Image.open does, minus its pixel-limit check
        factory, accept = Image.OPEN[fmt]
        ok = accept(prefix) if accept else True
        if ok and not isinstance(ok, str):
            fh.seek(0)
            try:
                return factory(fh, "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise Image.UnidentifiedImageError("cannot identify image file")


def _check_pixels(path: Path, im: Image.Image, stored: tuple[int, int], max_side: int | None) -> None:
    """Refuse (DataError with size and fix) what PIL would refuse as a decompression bomb; warn where PIL warns."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None:
        return
    (w, h), (sw, sh) = im.size, stored
    if w * h <= limit:
        return
    if w * h <= 2 * limit:
        warnings.warn(f"{path}: decoding {w}x{h} = {w * h:,} pixels, more than PIL.Image.MAX_IMAGE_PIXELS "
                      f"({limit:,}); pass max_side to decode JPEGs at reduced size", Image.DecompressionBombWarning,
                      stacklevel=4)
        return
    what = f"image of {sw}x{sh} (width x height) = {sw * sh:,} pixels"
    if (w, h) != (sw, sh):
        what += f", still {w}x{h} = {w * h:,} pixels when decoded at reduced size for max_side={max_side}"
    side = math.floor(math.sqrt(2 * limit * max(sw, sh) / min(sw, sh)))
    while side > 1 and side * math.ceil(side * min(sw, sh) / max(sw, sh)) > 2 * limit:
        side -= 1
    shrink = f"shrink the file to at most {side} px on its longer side"
    smallest = math.ceil(sw / 8) * math.ceil(sh / 8)
    if im.format not in DRAFTABLE:
        fix = f"{shrink} (or convert it to JPEG and pass max_side, which decodes JPEGs at reduced size)"
    elif smallest > 2 * limit:
        fix = f"{shrink} (even 1/8-size JPEG decoding gives {smallest:,} pixels)"
    elif not max_side:
        fix = (f"pass max_side (e.g. max_side=1024) to the loader, which decodes a JPEG at reduced size, "
               f"or {shrink}")
    else:
        fix = f"pass a smaller max_side (at most {max(sw, sh) // 8}), or {shrink}"
    raise DataError(path, f"{what}, above PIL's decompression-bomb limit of {2 * limit:,} pixels "
                    "(2 x PIL.Image.MAX_IMAGE_PIXELS), so it is not decoded",
                    f"{fix}; if you trust the file and have the memory, raise PIL.Image.MAX_IMAGE_PIXELS")


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation that ``ImageOps.exif_transpose`` applies (1 when absent or invalid)."""
    value = im.getexif().get(ExifTags.Base.Orientation, 1)
    return int(value) if value in ORIENTATIONS else 1


def _wide_png_low(fh: IO[bytes], rawmode: str) -> np.ndarray:
    """Decode a 16-bit colour PNG again with ``rawmode`` (see WIDE_PNG_RAWMODES), display-oriented."""
    fh.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(fh)
    im.tile = [im.tile[0]._replace(args=rawmode)]
    im.load()
    ImageOps.exif_transpose(im, in_place=True)
    return np.asarray(im)


def _decode_file(path: str | Path, max_side: int | None, keep_palette: bool
                 ) -> tuple[Image.Image | np.ndarray, FileInfo]:
    """(PIL image, or uint16 array for a 16-bit colour PNG; geometry) of a file, display-oriented, or DataError."""
    _check_truncation_setting()
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found", "check the path, or restore the file from the dataset archive")
    try:
        with open(path, "rb") as fh:
            im = _open_lazy(fh)
            stored = im.size
            if max_side and im.format in DRAFTABLE and max(stored) > max_side:
                rows, cols = fit_size(stored[1], stored[0], max_side)
                im.draft(None, (cols, rows))   # mode None: keep the colour mode
            _check_pixels(path, im, stored, max_side)
            wide = im.tile[0].args if im.format == "PNG" and len(im.tile) == 1 else None
            im.load()
            orientation = _orientation(im)
            ImageOps.exif_transpose(im, in_place=True)
            if wide in WIDE_PNG_RAWMODES:
                other = _wide_png_low(fh, WIDE_PNG_RAWMODES[wide]).astype(np.uint16)
                if wide == "LA;16B":
                    out: Image.Image | np.ndarray = other[..., 0] << 8 | other[..., 1]
                else:
                    out = np.asarray(im).astype(np.uint16) << 8 | other
            elif im.mode == "P" and not keep_palette:
                out = im.convert("RGBA" if "transparency" in im.info else "RGB")
            else:
                out = im
    except DataError:
        raise
    except DECODE_ERRORS as exc:
        raise DataError(path, f"corrupt or truncated image ({type(exc).__name__}: {exc})", DECODE_FIX) from exc
    w, h = stored
    size = (w, h) if orientation >= 5 else (h, w)
    return out, FileInfo(orientation=orientation, stored=(h, w), size=size)


def _image_pixels(path: str | Path, max_side: int | None = None) -> tuple[np.ndarray, FileInfo]:
    """An image file as (H, W, 3) uint8 in display orientation (JPEGs drafted towards ``max_side``), unresized."""
    im, info = _decode_file(path, max_side, keep_palette=False)
    if isinstance(im, np.ndarray):
        arr = im
    elif im.mode in ("1", "L", "RGB"):
        arr = np.asarray(im)
    elif im.mode in ("LA", "La"):
        arr = np.asarray(im)[..., 0]
    elif im.mode.startswith(("I", "F")):
        arr = np.asarray(im)
    else:
        arr = np.asarray(im.convert("RGB"))
    try:
        return to_rgb_uint8(arr), info
    except DataError as exc:
        raise DataError(path, exc.problem, exc.fix) from exc


def _mask_pixels(path: str | Path, max_side: int | None = None) -> tuple[np.ndarray, FileInfo]:
    """A mask file as (H, W) bool in display orientation (JPEGs drafted towards ``max_side``), unresized."""
    path = Path(path)
    if _is_nifti(path):
        data, _ = read_nifti(path)
        mask = _squeeze2d(data, path) > 0
        return mask, FileInfo(1, mask.shape, mask.shape)
    im, info = _decode_file(path, max_side, keep_palette=True)   # palette masks: the index is the label
    if isinstance(im, np.ndarray):
        arr = im
    else:
        arr = np.asarray(im.convert("L") if im.mode in ("LA", "La", "CMYK", "YCbCr") else im)
    try:
        return binarize_mask(arr, lossy=path.suffix.lower() in LOSSY_EXTS), info
    except DataError as exc:
        raise DataError(path, exc.problem, exc.fix) from exc


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to (rows, cols) bilinearly (unchanged when it already has that size)."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) bool mask to (rows, cols) by nearest neighbour (unchanged when it already has that size)."""
    if mask.shape == tuple(size):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)) > 127


def read_image(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB in display orientation, shrunk to ``max_side`` if given."""
    image, info = _image_pixels(path, max_side)
    return _resize_image(image, fit_size(*info.size, max_side))


def read_mask(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """Read a mask file as (H, W) bool in display orientation (rule in the module docstring), shrunk if asked."""
    mask, info = _mask_pixels(path, max_side)
    return _resize_mask(mask, fit_size(*info.size, max_side))


# ----------------------------------------------------------------------------- NIfTI

def read_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a NIfTI file reoriented to closest canonical (RAS): (data, spacing in mm per axis)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found", "check the path, or restore the file from the dataset archive")
    try:
        canon = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asanyarray(canon.dataobj)
        zooms = tuple(float(z) for z in canon.header.get_zooms()[: data.ndim])
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(path, f"corrupt or truncated NIfTI file ({type(exc).__name__}: {exc})", DECODE_FIX) from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data, zooms[:3]


def _squeeze2d(data: np.ndarray, path: Path) -> np.ndarray:
    """A 2D NIfTI as (H, W); anything with more than one slice raises DataError."""
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim != 2:
        raise DataError(path, f"expected a 2D image, got shape {data.shape}",
                        "pair 3D volumes with 3D label volumes")
    return data


def _check_finite(data: np.ndarray, path: Path) -> None:
    """Raise DataError if a volume holds NaN or inf voxels."""
    if np.issubdtype(data.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise DataError(path, f"{bad} NaN/inf voxels",
                            "repair the volume (e.g. replace them with -1024 HU) or exclude it from the dataset")


def load_volume(image_path: Path, label_path: Path, volume_id: str, domain: str, source: str,
                window: tuple[float, float] | None = (CT_LEVEL, CT_WIDTH), dataset: str = "") -> Volume:
    """Read an image + label NIfTI pair into a Volume (RAS, windowed, label > 0)."""
    hu, spacing = read_nifti(image_path)
    _check_finite(hu, image_path)
    lab, _ = read_nifti(label_path)
    _check_finite(lab, label_path)
    if hu.ndim != 3 or lab.shape != hu.shape:
        raise DataError(label_path, f"label shape {lab.shape} differs from image shape {hu.shape} "
                        f"({image_path.name})", "use the label volume that belongs to this image")
    mask = lab > 0
    image = _intensity_uint8(hu, window)
    meta = {"image_path": str(image_path), "label_path": str(label_path), "orientation": "RAS",
            "dataset": dataset, "empty_mask": not bool(mask.any())}
    return Volume(volume_id=volume_id, domain=domain, image=image, mask=mask,
                  spacing=tuple(spacing), source=source, meta=meta)


def _intensity_uint8(data: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """uint8 intensities: CT window (level, width) if given, else 0.5-99.5 percentile min-max."""
    if window is not None:
        return window_ct(data, *window)
    if data.dtype == np.uint8:
        return data.copy()
    lo, hi = np.percentile(data, [0.5, 99.5]) if data.size else (0.0, 0.0)
    if hi <= lo:
        return _minmax_uint8(data)
    return np.round((np.clip(data.astype(np.float32), lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


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
    _check_finite(data, pair.image)
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


LOADERS: dict[str, Callable[..., list]] = {
    "isic": load_isic, "spleen": load_msd_spleen, "kvasir": load_kvasir, "cxr": load_cxr,
}
DATASET_KEYS: dict[str, tuple[str, ...]] = {
    "isic": ("isic2018_task1",), "spleen": ("msd_spleen",), "kvasir": ("kvasir_seg",),
    "cxr": ("montgomery", "shenzhen"),
}


def load_real(domain: str, root: str | Path | None = None, **kwargs) -> list:
    """Real data of one study domain ("isic", "spleen", "kvasir", "cxr") through its loader."""
    if domain not in LOADERS:
        raise ConfigError(f"unknown domain {domain!r}; real loaders exist for {sorted(LOADERS)}; "
                          "use load_folder(root, domain) for a new one")
    return LOADERS[domain](root, **kwargs)
