"""segment-anything checkpoints: SAM ViT-B/L/H (generic) and MedSAM ViT-B (medical), each with its own preprocessing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .base import PromptableModel, minmax01


class SamCheckpoint(PromptableModel):
    """Generic SAM: longest side -> 1024, ImageNet-style pixel mean/std, pad to 1024x1024."""

    key = "sam"
    label = "SAM (generic, natural-image pretraining)"
    preprocess_id = "sam-longest1024-meanstd-pad"
    input_frame = 1024

    def __init__(self, sam, weights_id: str, key: str | None = None, label: str | None = None):
        super().__init__(sam.image_encoder, sam.prompt_encoder, sam.mask_decoder, weights_id)
        self.sam = sam.eval()
        self.input_frame = sam.image_encoder.img_size
        if key:
            self.key = key
        if label:
            self.label = label

    def to(self, device):
        """Move the whole Sam module (its pixel mean/std buffers included)."""
        self.sam.to(device)
        return super().to(device)

    @classmethod
    def from_checkpoint(cls, arch: str, checkpoint: str | Path, weights_id: str | None = None, **kw):
        """Load a segment-anything checkpoint (``arch`` in vit_b / vit_l / vit_h)."""
        from segment_anything import sam_model_registry

        path = Path(checkpoint)
        if not path.is_file():
            raise DataError(path, "checkpoint not found", "run `make data` or place the file there (see data_manifest.yaml)")
        try:
            sam = sam_model_registry[arch](checkpoint=str(path))
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
            raise DataError(path, f"could not load a {arch} checkpoint ({exc.__class__.__name__}: {_first_line(exc)})",
                            "delete the file and fetch it again; check its sha256 against data_manifest.yaml") from exc
        return cls(sam, weights_id or _file_id(path), **kw)

    def preprocess(self, image):
        """SAM's own transform: longest side to 1024 (as ResizeLongestSide), normalise, pad."""
        from segment_anything.utils.transforms import ResizeLongestSide

        tr = ResizeLongestSide(self.input_frame)
        resized = tr.apply_image(image)
        x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float()
        h, w = x.shape[-2:]
        return self.sam.preprocess(x.to(self.device)), (int(h), int(w))

    def scale_coords(self, xy, original_size, input_size):
        """ResizeLongestSide.apply_coords: scale x by new_w/W and y by new_h/H."""
        xy = np.array(xy, dtype=np.float64)
        h, w = original_size
        xy[..., 0] *= input_size[1] / w
        xy[..., 1] *= input_size[0] / h
        return xy

    def upscale(self, low_res, original_size, input_size):
        """Sam.postprocess_masks: upsample to 1024, crop the padding, resize to the original size."""
        return self.sam.postprocess_masks(low_res, tuple(input_size), tuple(original_size))


class MedSAM(SamCheckpoint):
    """MedSAM ViT-B: stretch to 1024x1024 (bicubic), min-max normalise to [0, 1]; boxes scaled per axis."""

    key = "medsam"
    label = "MedSAM ViT-B (medical, SAM fine-tuned on ~1M medical masks)"
    preprocess_id = "medsam-stretch1024-minmax01"
    is_medical = True

    def preprocess(self, image):
        """Resize to 1024x1024 without keeping aspect, then min-max normalise."""
        x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(self.input_frame,) * 2, mode="bicubic", align_corners=False, antialias=True)
        return minmax01(x.clamp(0, 255)), (self.input_frame, self.input_frame)

    def upscale(self, low_res, original_size, input_size):
        """Low-res logits straight to the original size (the image was stretched, not padded)."""
        return F.interpolate(low_res, size=tuple(original_size), mode="bilinear", align_corners=False)


def _file_id(path: Path) -> str:
    """A cheap identity of a weights file: name, size and mtime (the manifest's sha256 is checked by `make data`)."""
    st = path.stat()
    return f"{path.name}-{st.st_size}-{int(st.st_mtime)}".replace(".", "_")


def _first_line(exc: Exception) -> str:
    """First line of an exception message, shortened."""
    return (str(exc).splitlines() or [""])[0][:160]
