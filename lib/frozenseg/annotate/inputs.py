"""Reading a collection to annotate: ``FOLDER/images/`` (2D files, NIfTI volumes, DICOM series as sub-folders)
and the few masks in ``FOLDER/masks/`` (matching stems; a NIfTI mask for a volume or a series). Nothing in FOLDER
is written. Unreadable images are skipped and listed; a mask that does not fit its image is an error."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cache import image_hash
from ..data.decoded import DecodedCache
from ..data.files import (CT_LEVEL, CT_WIDTH, IMAGE_EXTS, MASK_SUFFIXES, check_finite, file_stem, intensity_uint8,
                          is_nifti, natural_key, read_nifti_image, visible_files)
from ..data.loaders import decode_pair
from ..data.types import Pair
from ..errors import DataError
from .dicom import read_series

LAYOUT = ("FOLDER/images/ holds every image (PNG/JPG/TIF, NIfTI volumes, or one sub-folder per DICOM series); "
          "FOLDER/masks/<stem>[_mask].png|.nii.gz holds the masks of the labelled ones")


@dataclass
class Item:
    """One image of the collection: a 2D image ('image'), a NIfTI volume ('volume') or a DICOM series ('series')."""

    name: str
    kind: str
    path: Path
    image: np.ndarray                  # 2D: (H, W, 3) uint8 at working size; 3D: (X, Y, Z) uint8, closest RAS
    mask: np.ndarray | None = None     # same grid as image; None when unlabelled
    mask_path: Path | None = None
    geometry: dict = field(default_factory=dict)   # 2D: full 'size'; 3D: the source nibabel 'source' image
    key: str = ""                      # content hash of the decoded image

    @property
    def labelled(self) -> bool:
        """True when masks/ holds this item's mask."""
        return self.mask is not None

    def slices(self) -> list[np.ndarray]:
        """The (H, W, 3) uint8 images the model sees: the image, or every axial slice of a volume."""
        if self.kind == "image":
            return [self.image]
        return [np.repeat(self.image[:, :, z, None], 3, axis=2) for z in range(self.image.shape[2])]


@dataclass
class Collection:
    """Every readable item, sorted by name, and the files skipped as unreadable (path, reason)."""

    folder: Path
    items: list[Item]
    skipped: list[tuple[str, str]]

    @property
    def labelled(self) -> list[Item]:
        """Items with a mask."""
        return [it for it in self.items if it.labelled]

    @property
    def unlabelled(self) -> list[Item]:
        """Items without a mask: the ones to segment."""
        return [it for it in self.items if not it.labelled]


def _listing(folder: Path) -> tuple[dict[str, Path], dict[str, Path], list[tuple[str, str]]]:
    """(stem -> image file or series folder, stem -> mask file, files left out as not images)."""
    img_dir, mask_dir = folder / "images", folder / "masks"
    if not img_dir.is_dir():
        raise DataError(folder, "no images/ sub-folder", f"arrange the collection as {LAYOUT}")
    images, other = {}, []
    for p in sorted(visible_files(img_dir.iterdir())):
        if not (p.is_dir() or is_nifti(p) or p.suffix.lower() in IMAGE_EXTS):
            other.append((str(p), "not a PNG/JPG/TIF/BMP image, NIfTI volume or DICOM series folder"))
            continue
        stem = p.name if p.is_dir() else file_stem(p)
        if stem in images:
            raise DataError(p, f"two entries share the name {stem!r} ({images[stem].name}, {p.name})",
                            "keep one file (or series folder) per image in images/")
        images[stem] = p
    if not images:
        raise DataError(img_dir, "no images found", f"arrange the collection as {LAYOUT}")
    masks: dict[str, Path] = {}
    for p in sorted(visible_files(mask_dir.iterdir())) if mask_dir.is_dir() else []:
        if not p.is_file() or not (is_nifti(p) or p.suffix.lower() in IMAGE_EXTS):
            continue
        stem = file_stem(p)
        owner = next((stem[: len(stem) - len(s)] for s in MASK_SUFFIXES if s and stem.endswith(s)
                      and stem[: len(stem) - len(s)] in images), stem)
        if owner not in images:
            raise DataError(p, f"mask without an image: no images/{owner}.* (or series folder images/{owner}/)",
                            f"name the mask after its image's stem, or remove it; {LAYOUT}")
        if owner in masks:
            raise DataError(p, f"two masks for {owner!r} ({masks[owner].name}, {p.name})", "keep one mask per image")
        masks[owner] = p
    return images, masks, other


def _read_2d(name: str, path: Path, mask_path: Path | None, max_side: int | None) -> Item:
    """A 2D image (and its mask) through the study's decoder and its cache of decoded files: display orientation,
    shrunk to ``max_side``."""
    if mask_path is not None and is_nifti(mask_path):
        import nibabel as nib

        shape = tuple(int(s) for s in nib.load(str(mask_path)).shape)
        if len([s for s in shape if s > 1]) > 2:
            raise DataError(mask_path, f"a 3D mask volume of shape {shape} for the 2D image {path.name}",
                            "give a 2D image a 2D mask of its size (PNG or TIF, foreground > 0)")
    dec = DecodedCache().get(Pair(name, path, (mask_path,) if mask_path else (), "folder"), max_side, decode_pair)
    return Item(name, "image", path, dec.image, dec.mask if mask_path else None, mask_path,
                {"size": tuple(int(v) for v in dec.orig_size)}, image_hash(dec.image))


def _volume(name: str, kind: str, path: Path, data: np.ndarray, source, mask_path: Path | None,
            window) -> Item:
    """A volume (closest RAS) with its NIfTI mask checked against it."""
    check_finite(data, path)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DataError(path, f"expected a 2D or 3D image, got shape {data.shape}", "keep one channel per volume")
    image = intensity_uint8(data, window)
    mask = None
    if mask_path is not None:
        if not is_nifti(mask_path):
            raise DataError(mask_path, f"a 2D mask for the {'DICOM series' if kind == 'series' else 'NIfTI volume'} "
                            f"{path.name}", "give a volume a NIfTI mask (.nii.gz) in its own voxel grid")
        lab, _, _ = read_nifti_image(mask_path)
        check_finite(lab, mask_path)
        lab = lab[:, :, None] if lab.ndim == 2 else lab
        if lab.shape != image.shape:
            raise DataError(mask_path, f"mask shape {lab.shape} differs from the shape {image.shape} of "
                            f"{path.name} (both in closest RAS orientation)",
                            "use the mask drawn on this volume, saved in its voxel grid")
        mask = lab > 0
    return Item(name, kind, path, image, mask, mask_path, {"source": source}, image_hash(image))


def _read_3d(name: str, path: Path, mask_path: Path | None, window) -> Item:
    """A NIfTI image, or a DICOM series folder (HU; CT windowed at level 40 / width 400 unless ``window``)."""
    import nibabel as nib

    if path.is_dir():
        hu, affine, modality = read_series(path)
        source = nib.Nifti1Image(hu.astype(np.float32), affine)
        data = np.asanyarray(nib.as_closest_canonical(source).dataobj)
        win = window if window is not None else ((CT_LEVEL, CT_WIDTH) if modality == "CT" else None)
        return _volume(name, "series", path, data, source, mask_path, win)
    data, _, source = read_nifti_image(path)
    return _volume(name, "volume", path, data, source, mask_path, window)


def read_collection(folder: str | Path, max_side: int | None = 512,
                    window: tuple[float, float] | None = None) -> Collection:
    """Every item of ``folder`` with its mask where masks/ has one. An image that cannot be read is skipped (a
    warning lists each); a mask that does not fit its image raises DataError naming it and the fix."""
    folder = Path(folder)
    images, masks, skipped = _listing(folder)
    items = []
    for name in sorted(images, key=natural_key):
        path, mask_path = images[name], masks.get(name)
        try:
            if path.is_dir() or is_nifti(path):
                items.append(_read_3d(name, path, mask_path, window))
            else:
                items.append(_read_2d(name, path, mask_path, max_side))
        except DataError as exc:
            if not _image_fault(exc, path):
                raise
            skipped.append((str(path), exc.problem))
    if skipped:
        warnings.warn(f"{len(skipped)} file(s) in {folder / 'images'} could not be read and are skipped: "
                      + "; ".join(f"{p} ({why})" for p, why in skipped), stacklevel=2)
    return Collection(folder, items, skipped)


def _image_fault(exc: DataError, path: Path) -> bool:
    """True when ``exc`` is about the image itself being unreadable (not about its geometry against a mask)."""
    where = Path(exc.path) if exc.path is not None else None
    if where is None or not (where == path or path in where.parents):
        return False
    return any(w in exc.problem for w in ("corrupt", "truncated", "cannot decode", "no readable", "not found",
                                          "above PIL's decompression-bomb limit", "NaN"))
