"""One DICOM series from a folder: its slices sorted by position along the slice normal, HU rescaled, and its
geometry as a RAS affine (so a mask can be written, and read, as NIfTI in the series' own voxel grid)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError

GAP_FACTOR = 1.5          # a step between slice positions this many times the median step means slices are missing
SERIES_FIX = "put each DICOM series in its own sub-folder of images/ (one sub-folder per series)"
EXPORT_FIX = "export the complete series again (every slice), or remove this series folder from images/"


def _read_all(folder: Path) -> list:
    """Every DICOM file with pixel data in ``folder`` (other files are left out with a warning)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out, other = [], []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(p)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            other.append(f"{p.name} ({type(exc).__name__})")
            continue
        if "PixelData" not in ds:
            other.append(f"{p.name} (no pixel data)")
            continue
        out.append((p, ds))
    if other:
        warnings.warn(f"{folder}: {len(other)} file(s) that are not DICOM images are left out: {other[:5]}",
                      stacklevel=3)
    if not out:
        raise DataError(folder, "no readable DICOM image in this series folder",
                        "put the series' .dcm files in it, or remove the folder from images/")
    return out


def _one_series(folder: Path, files: list) -> None:
    """Raise DataError unless every file belongs to one series with one orientation and one size."""
    uids = {}
    for _, ds in files:
        uid = str(getattr(ds, "SeriesInstanceUID", ""))
        uids.setdefault(uid, [0, str(getattr(ds, "SeriesDescription", "") or "")])[0] += 1
    if len(uids) > 1:
        desc = [f"{uid or '(no SeriesInstanceUID)'} ({n} files{', ' + d if d else ''})" for uid, (n, d) in uids.items()]
        raise DataError(folder, f"this folder holds {len(uids)} DICOM series: {desc}", SERIES_FIX)
    iops = np.array([[float(v) for v in getattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
                     for _, ds in files])
    if np.abs(iops - iops[0]).max() > 1e-4:
        raise DataError(folder, "its slices have different orientations (ImageOrientationPatient)", SERIES_FIX)
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in files}
    if len(sizes) > 1:
        raise DataError(folder, f"its slices have different sizes {sorted(sizes)}", SERIES_FIX)


def read_series(folder: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(HU volume indexed (column, row, slice), its RAS affine, the modality) of the one series in ``folder``.

    Slices are sorted by their position along the slice normal (ImagePositionPatient projected on the cross
    product of ImageOrientationPatient's two directions), never by file name; a step between neighbouring
    positions more than GAP_FACTOR times the median step, or two slices at one position, raises DataError."""
    folder = Path(folder)
    files = _read_all(folder)
    _one_series(folder, files)
    ds0 = files[0][1]
    iop = np.array([float(v) for v in getattr(ds0, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])])
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    pos = np.array([[float(v) for v in getattr(ds, "ImagePositionPatient", [0, 0, i])] for i, (_, ds) in
                    enumerate(files)])
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    files, pos, along = [files[i] for i in order], pos[order], along[order]
    steps = np.diff(along)
    if len(steps) and steps.min() < 1e-3:
        i = int(np.argmin(steps))
        raise DataError(folder, f"two slices at one position ({files[i][0].name}, {files[i + 1][0].name})",
                        "keep one copy of each slice; " + SERIES_FIX)
    if len(steps) > 1:
        step = float(np.median(steps))
        gaps = np.flatnonzero(steps > GAP_FACTOR * step)
        if len(gaps):
            i = int(gaps[0])
            raise DataError(folder, f"missing slice(s): {len(gaps)} gap(s) in the slice positions, the first "
                            f"{steps[i]:.2f} mm between {files[i][0].name} and {files[i + 1][0].name} where the "
                            f"series' step is {step:.2f} mm", EXPORT_FIX)
    slices = []
    for p, ds in files:
        try:
            px = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # noqa: BLE001 - any decoder failure names the file
            raise DataError(p, f"cannot decode the pixel data ({type(exc).__name__}: {exc})",
                            "export the series uncompressed, or install a decoder for its transfer syntax") from exc
        slope, icpt = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
        slices.append((px * slope + icpt).T)                      # (rows, cols) -> (column i, row j)
    volume = np.stack(slices, axis=-1)
    spacing = [float(v) for v in getattr(ds0, "PixelSpacing", [1.0, 1.0])]   # (between rows, between columns)
    if len(files) > 1:
        k_step = (pos[-1] - pos[0]) / (len(files) - 1)
    else:
        k_step = normal * float(getattr(ds0, "SliceThickness", 1.0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_dir * spacing[1], col_dir * spacing[0], k_step, pos[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps               # DICOM's LPS -> NIfTI's RAS
    return volume, affine, str(getattr(ds0, "Modality", ""))
