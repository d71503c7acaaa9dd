"""Reading one image, mask or NIfTI file: decoding, orientation, size and the mask rule.

:mod:`frozenseg.data.loaders` builds cases and volumes of the datasets from these files.

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
* A corrupt or truncated file raises ``DataError`` naming the file and the fix; NaN/inf voxels are
  refused by :func:`check_finite`.
"""
from __future__ import annotations

import math
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from ..errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_EXTS = (".nii.gz", ".nii")
LOSSY_EXTS = (".jpg", ".jpeg")
MASK_SUFFIXES = ("", "_mask", "_segmentation")
CT_LEVEL, CT_WIDTH = 40.0, 400.0
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
    data, zooms, _ = read_nifti_image(path)
    return data, zooms


def read_nifti_image(path: str | Path):
    """(data reoriented to closest canonical (RAS), spacing in mm per axis, the file's nibabel image with its own
    affine and header, for writing a result back in the file's geometry)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found", "check the path, or restore the file from the dataset archive")
    try:
        img = nib.load(str(path))
        canon = nib.as_closest_canonical(img)
        data = np.asanyarray(canon.dataobj)
        zooms = tuple(float(z) for z in canon.header.get_zooms()[: data.ndim])
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
        raise DataError(path, f"corrupt or truncated NIfTI file ({type(exc).__name__}: {exc})", DECODE_FIX) from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data, zooms[:3], img


def _squeeze2d(data: np.ndarray, path: Path) -> np.ndarray:
    """A 2D NIfTI as (H, W); anything with more than one slice raises DataError."""
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim != 2:
        raise DataError(path, f"expected a 2D image, got shape {data.shape}",
                        "pair 3D volumes with 3D label volumes")
    return data


def check_finite(data: np.ndarray, path: Path) -> None:
    """Raise DataError if a volume holds NaN or inf voxels."""
    if np.issubdtype(data.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise DataError(path, f"{bad} NaN/inf voxels",
                            "repair the volume (e.g. replace them with -1024 HU) or exclude it from the dataset")


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


# Public names of the helpers above for packages outside data/ (frozenseg.annotate reads a collection with them).
is_nifti, file_stem, visible_files, intensity_uint8 = _is_nifti, _stem, _visible, _intensity_uint8
