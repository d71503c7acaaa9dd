"""The trained networks: the study's U-Net (ResNet-34 encoder) and SegFormer (MiT-B2), and a smaller pair for the
2-core profiles (:data:`ARCHS`), built offline from scratch or from ImageNet encoder weights found on disk (declared
in data_manifest.yaml, never downloaded at run time)."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch

from ..errors import ConfigError, MissingDatasetError

FROM_SCRATCH, PRETRAINED = "from scratch", "pretrained"

# arch key -> (label, smp architecture, smp encoder name, manifest key of the ImageNet encoder weights). The study's
# networks are U-Net R34 and SegFormer B2 (full profile); the cpu and sample profiles train the small pair, which
# reaches its validation plateau within the 2-core machine's time (their captions say so). RegNetX is smp's timm
# universal encoder (``tu-``): smp 0.6 builds its deprecated ``timm-regnetx_002`` name as this same network, and loads
# the smp-hub weights of data_manifest.yaml (keys without the ``model.`` prefix) into it.
ARCHS: dict[str, tuple[str, str, str, str]] = {
    "unet_r34": ("U-Net (ResNet-34)", "Unet", "resnet34", "smp_resnet34_imagenet"),
    "segformer_b2": ("SegFormer (MiT-B2)", "Segformer", "mit_b2", "smp_mit_b2_imagenet"),
    "unet_regnetx002": ("U-Net (RegNetX-200MF, narrow decoder)", "Unet", "tu-regnetx_002", "smp_regnetx002_imagenet"),
    "segformer_b0": ("SegFormer (MiT-B0, 64-channel head)", "Segformer", "mit_b0", "smp_mit_b0_imagenet"),
}
STUDY_ARCHS = ("unet_r34", "segformer_b2")
SMALL_ARCHS = ("unet_regnetx002", "segformer_b0")
# smp's defaults: U-Net decoder (256, 128, 64, 32, 16), SegFormer head 256 channels. The small pair's narrower
# decoders make a step much cheaper on the CPU; notebook 06's runs table gives each run's seconds.
ARCH_KWARGS = {"unet_regnetx002": {"decoder_channels": (64, 32, 16, 8, 8)},
               "segformer_b0": {"decoder_segmentation_channels": 64}}


def arch_label(arch: str) -> str:
    """Display name of an architecture key."""
    return ARCHS[check_arch(arch)][0]


def check_arch(arch: str) -> str:
    """Return ``arch`` if known, else raise a ConfigError listing the known ones."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown trained architecture {arch!r}; choose from {sorted(ARCHS)}")
    return arch


def pretrained_path(arch: str) -> Path | None:
    """Folder of the arch's ImageNet encoder weights under the data root, or None when absent."""
    from ..manifest import locate

    try:
        return locate(ARCHS[check_arch(arch)][3])
    except MissingDatasetError:
        return None


def resolve_init(arch: str, pretrained: bool | str) -> tuple[str, Path | None]:
    """('pretrained', folder) when weights are wanted and present, else ('from scratch', None).

    ``pretrained``: "auto" uses weights when present, True requires them (MissingDatasetError names them),
    False never uses them.
    """
    if pretrained is False:
        return FROM_SCRATCH, None
    path = pretrained_path(arch)
    if path is None and pretrained is True:
        from ..manifest import locate

        locate(ARCHS[arch][3])   # raises the error that names the weights and how to get them
    return (PRETRAINED, path) if path is not None else (FROM_SCRATCH, None)


def build_net(arch: str, pretrained: bool | str = "auto", seed: int = 0) -> tuple[torch.nn.Module, str]:
    """A one-class segmentation network initialised under ``seed``, and its init label ('from scratch' or
    'pretrained'); the initial weights depend only on (arch, init, seed), so they are drawn once and copied."""
    init, folder = resolve_init(check_arch(arch), pretrained)
    return copy.deepcopy(_template(arch, None if folder is None else str(folder), int(seed))), init


@functools.lru_cache(maxsize=4)
def _template(arch: str, folder: str | None, seed: int) -> torch.nn.Module:
    """The freshly initialised network of (arch, encoder weights, seed); the global RNG state is left untouched."""
    import segmentation_models_pytorch as smp

    _, kind, encoder, _ = ARCHS[arch]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = getattr(smp, kind)(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=1,
                                 **ARCH_KWARGS.get(arch, {}))
    if folder is not None:
        load_encoder(net, Path(folder))
    return net


def load_encoder(net: torch.nn.Module, folder: Path) -> None:
    """Load smp-hub encoder weights (``model.safetensors``) from a local folder into ``net.encoder``."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise MissingDatasetError(folder, "no *.safetensors encoder weights in the folder",
                                  "download the smp-hub repository named in data_manifest.yaml into it")
    net.encoder.load_state_dict(load_file(str(files[0]), device="cpu"))
