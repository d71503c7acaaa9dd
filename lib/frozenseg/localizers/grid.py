"""Feature cells <-> image pixels: where each cell of a frozen feature grid lies in the original image.

A SAM-family embedding covers the model's square input frame; the image fills its top-left
``input_size`` part (padded bottom/right), so only the first ``ceil(input_size / stride)`` cells
hold image content. A stretched grid (DINOv2 on a resized square) is the same object with
per-axis scales.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FeatureGrid:
    """Geometry of one feature grid over one image: pixel -> frame is ``xy * scale``, frame -> cell is ``/ stride``."""

    original_size: tuple[int, int]     # (H, W) of the image
    input_size: tuple[int, int]        # (h, w) of the image inside the model frame
    stride: float                      # frame pixels per feature cell
    scale: tuple[float, float]         # (sx, sy) frame pixels per image pixel

    @classmethod
    def of(cls, model, emb) -> "FeatureGrid":
        """Grid of a PromptableModel's embedding (uses ``model.scale_coords``, so any resize rule works)."""
        s = np.asarray(model.scale_coords(np.array([[1.0, 1.0]]), emb.original_size, emb.input_size))[0]
        stride = model.input_frame / emb.features.shape[-1]
        return cls(tuple(emb.original_size), tuple(emb.input_size), float(stride), (float(s[0]), float(s[1])))

    @classmethod
    def stretched(cls, original_size, cells: tuple[int, int], stride: float) -> "FeatureGrid":
        """Grid of an image resized (aspect not kept) to ``cells * stride`` frame pixels."""
        h, w = original_size
        fh, fw = cells[0] * stride, cells[1] * stride
        return cls(tuple(original_size), (int(round(fh)), int(round(fw))), float(stride), (fw / w, fh / h))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of cells that hold image content."""
        return math.ceil(self.input_size[0] / self.stride - 1e-9), math.ceil(self.input_size[1] / self.stride - 1e-9)

    def pixel_to_cell(self, xy) -> np.ndarray:
        """(..., 2) xy pixels -> (..., 2) integer (col, row) cells, clipped to the valid grid."""
        xy = np.asarray(xy, dtype=np.float64)
        c = np.floor(xy * np.array(self.scale) / self.stride).astype(int)
        return np.clip(c, 0, np.array(self.shape[::-1]) - 1)

    def cell_to_pixel(self, cr) -> np.ndarray:
        """(..., 2) (col, row) cells -> (..., 2) xy pixel coordinates of the cell centres."""
        cr = np.asarray(cr, dtype=np.float64)
        return (cr + 0.5) * self.stride / np.array(self.scale)

    def valid(self, features: np.ndarray) -> np.ndarray:
        """Crop a (C, gh, gw) feature array to the cells that hold image content."""
        gh, gw = self.shape
        return features[:, :gh, :gw]

    def pool(self, mask: np.ndarray) -> np.ndarray:
        """Fraction of each valid cell covered by a (..., H, W) mask -> (..., gh, gw) float32 in [0, 1]."""
        gh, gw = self.shape
        m = np.asarray(mask, dtype=np.float32)
        lead = m.shape[:-2]
        t = torch.from_numpy(m.reshape(-1, 1, *m.shape[-2:]))
        t = F.interpolate(t, size=self.input_size, mode="bilinear", align_corners=False)
        fh, fw = int(round(gh * self.stride)), int(round(gw * self.stride))
        t = F.pad(t, (0, max(0, fw - self.input_size[1]), 0, max(0, fh - self.input_size[0])))
        return F.adaptive_avg_pool2d(t[..., :fh, :fw], (gh, gw))[:, 0].numpy().reshape(*lead, gh, gw)

    def upsample(self, cells: np.ndarray) -> np.ndarray:
        """A (gh, gw) cell map -> (H, W) float32 map at the original image size (bilinear)."""
        gh, gw = self.shape
        t = torch.from_numpy(np.ascontiguousarray(cells, dtype=np.float32))[None, None]
        fh, fw = int(round(gh * self.stride)), int(round(gw * self.stride))
        t = F.interpolate(t, size=(fh, fw), mode="bilinear", align_corners=False)
        t = t[..., : self.input_size[0], : self.input_size[1]]
        return F.interpolate(t, size=tuple(self.original_size), mode="bilinear", align_corners=False)[0, 0].numpy()
