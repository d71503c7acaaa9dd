"""The data records every loader and phantom generator returns, and the file paths a loader reads one 2D case from."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class Pair:
    """Paths of one labelled 2D case (several mask files are united, e.g. left + right lung)."""

    case_id: str
    image: Path
    masks: tuple[Path, ...]
    dataset: str


@dataclass
class Case:
    """One 2D image with its ground-truth mask (a CT slice is a Case with ``volume_id`` set)."""

    case_id: str
    domain: str
    image: np.ndarray                       # (H, W, 3) uint8 RGB; grey images are replicated
    mask: np.ndarray                        # (H, W) bool
    source: str = "phantom"                 # "phantom", "real" or "folder"
    volume_id: str | None = None
    slice_index: int | None = None
    spacing: tuple[float, float] | None = None  # mm per pixel (row, col) where known
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_pair(self.image, self.mask, self.case_id)


@dataclass
class Volume:
    """A 3D scan (CT windowed to uint8) with its mask, scored per volume, never per slice."""

    volume_id: str
    domain: str
    image: np.ndarray                       # (H, W, D) uint8, axial slices along the last axis
    mask: np.ndarray                        # (H, W, D) bool
    spacing: tuple[float, float, float]     # mm (row, col, slice)
    source: str = "phantom"
    meta: dict = field(default_factory=dict)

    def slice_case(self, z: int) -> Case:
        """Axial slice ``z`` as a Case (grey replicated to RGB); ``meta`` holds the volume's depth and slice spacing."""
        img = np.repeat(self.image[:, :, z, None], 3, axis=2)
        return Case(
            case_id=f"{self.volume_id}_z{z:03d}", domain=self.domain, image=img,
            mask=self.mask[:, :, z].copy(), source=self.source, volume_id=self.volume_id,
            slice_index=z, spacing=self.spacing[:2],
            meta={"depth": int(self.image.shape[2]), "z_spacing": float(self.spacing[2])},
        )

    def foreground_slices(self) -> list[int]:
        """Indices of slices whose mask is not empty."""
        return [int(z) for z in np.flatnonzero(self.mask.any(axis=(0, 1)))]


@dataclass
class DomainData:
    """Train pool and fixed test split of one domain."""

    domain: str
    source: str
    train: list[Case]
    test: list[Case]
    volumes: dict[str, Volume] = field(default_factory=dict)   # spleen: test volumes for 3D scoring
    meta: dict = field(default_factory=dict)
    train_volumes: dict[str, Volume] = field(default_factory=dict)   # spleen: the labelled train volumes (genome)

    @classmethod
    def from_volumes(cls, domain: str, source: str, train: list[Volume], test: list[Volume],
                     meta: dict | None = None) -> "DomainData":
        """A volume domain: the train pool is the labelled (organ-containing) slices of the train volumes; the test
        split is EVERY slice of each test volume, empty ones included, so that every method predicts (and is
        scored on) the same slices, and a false positive on an organ-free slice counts."""
        meta = {**(meta or {}), "train_volumes": [v.volume_id for v in train],
                "test_volumes": [v.volume_id for v in test]}
        return cls(domain=domain, source=source,
                   train=[v.slice_case(z) for v in train for z in v.foreground_slices()],
                   test=[v.slice_case(z) for v in test for z in range(v.image.shape[2])],
                   volumes={v.volume_id: v for v in test}, meta=meta,
                   train_volumes={v.volume_id: v for v in train})


def validate_pair(image: np.ndarray, mask: np.ndarray, name: str) -> None:
    """Raise DataError unless image is (H,W,3) uint8 without NaN and mask is a same-size (H,W) bool."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(name, f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}",
                        "convert with frozenseg.data.to_rgb_uint8")
    if mask.shape != image.shape[:2]:
        raise DataError(name, f"mask size {mask.shape} differs from image size {image.shape[:2]}",
                        "use the mask that belongs to this image, or resize it with nearest-neighbour")
    if mask.dtype != bool:
        raise DataError(name, f"mask must be bool, got {mask.dtype}", "binarise it (mask > 0)")
