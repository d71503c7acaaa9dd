"""Frozen feature spaces for the localizers: the SAM image embedding, or DINOv2 patch tokens via transformers."""
from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import image_hash
from ..devices import record
from ..errors import ConfigError, MissingDatasetError
from ..models.base import default_device, folder_id
from .grid import FeatureGrid

DINOV2_KEYS = ("dinov2_vits14", "dinov2_vitb14")      # manifest entries tried in order
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FeatureMap:
    """Per-cell unit-norm features (C, gh, gw) of one image and the grid that places them in the image."""

    cells: np.ndarray
    grid: FeatureGrid

    def flat(self) -> np.ndarray:
        """(gh*gw, C) rows, one per cell."""
        return self.cells.reshape(self.cells.shape[0], -1).T

    def pool_mask(self, mask: np.ndarray) -> np.ndarray:
        """(gh*gw,) fraction of each cell covered by a (H, W) mask."""
        return self.grid.pool(mask).reshape(-1)


def unit_cells(f: np.ndarray, center: bool) -> np.ndarray:
    """L2-normalise each cell of (C, h, w) features, optionally after removing the image's mean feature."""
    f = np.asarray(f, dtype=np.float32)
    if center:
        f = f - f.reshape(f.shape[0], -1).mean(1)[:, None, None]
    return f / np.maximum(np.linalg.norm(f, axis=0, keepdims=True), 1e-8)


class SamFeatures:
    """The promptable model's own image embedding (valid cells only), optionally average-pooled by ``pool``."""

    name = "sam"

    def __init__(self, model, pool: int = 1, center: bool = True):
        self.model, self.pool, self.center = model, int(pool), bool(center)

    def __call__(self, image: np.ndarray, emb) -> FeatureMap:
        """FeatureMap of one image from its cached embedding."""
        if emb is None:
            raise ConfigError("the 'sam' feature space needs the image's embedding (pass study.embeddings(cases))")
        grid = FeatureGrid.of(self.model, emb)
        f = grid.valid(emb.features)
        if self.pool > 1:
            f = F.avg_pool2d(torch.from_numpy(np.ascontiguousarray(f))[None], self.pool, ceil_mode=True)[0].numpy()
            grid = FeatureGrid(grid.original_size, grid.input_size, grid.stride * self.pool, grid.scale)
        return FeatureMap(unit_cells(f, self.center), grid)


class Dinov2Features:
    """DINOv2 patch tokens (transformers ``Dinov2Model``) of the image stretched to ``side`` x ``side``."""

    name = "dinov2"

    def __init__(self, model, side: int = 224, center: bool = True, memo: int = 512):
        self.net = model.eval()
        record("dinov2", self.net)
        self.patch = int(model.config.patch_size)
        self.side = int(side) // self.patch * self.patch
        self.center, self.memo, self._memo = bool(center), int(memo), OrderedDict()

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, **kw) -> "Dinov2Features":
        """Load frozen weights from a transformers-format folder onto ``device`` (None: ``models.default_device``);
        :func:`load_dinov2` keeps one per process."""
        from transformers import Dinov2Model

        return cls(Dinov2Model.from_pretrained(str(path)).to(device or default_device()), **kw)

    @torch.no_grad()
    def tokens(self, image: np.ndarray) -> np.ndarray:
        """(C, n, n) raw patch tokens of one image (memoised by image content)."""
        key = image_hash(image)
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False, antialias=True)
        x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
        dev = next(self.net.parameters()).device
        hid = self.net(pixel_values=x.to(dev)).last_hidden_state[0, 1:].float().cpu().numpy()
        n = self.side // self.patch
        tok = hid[-n * n:].T.reshape(-1, n, n)
        self._memo[key] = tok
        if len(self._memo) > self.memo:
            self._memo.popitem(last=False)
        return tok

    def __call__(self, image: np.ndarray, emb=None) -> FeatureMap:
        """FeatureMap of one image (the SAM embedding is not used)."""
        tok = self.tokens(image)
        grid = FeatureGrid.stretched(image.shape[:2], tok.shape[1:], self.patch)
        return FeatureMap(unit_cells(tok, self.center), grid)


class ColourFeatures:
    """A hand-crafted, always-available second space: per-cell colour and texture statistics on a ``cells`` grid.

    Each cell holds the mean and standard deviation of R, G, B and of the grey-level gradient magnitude at two
    scales, plus the saturation and value of its mean colour (12 numbers, standardised per image). It stands in
    for DINOv2 in the feature-ensemble comparison when DINOv2 weights are absent; it is not a learned representation.
    """

    name = "colour"

    def __init__(self, model=None, cells: int = 32, center: bool = True):
        self.cells, self.center = int(cells), bool(center)

    def __call__(self, image: np.ndarray, emb=None) -> FeatureMap:
        """FeatureMap of one image (the SAM embedding is not used)."""
        n = self.cells
        x = torch.from_numpy(np.array(image, dtype=np.float32, copy=True)).permute(2, 0, 1)[None] / 255.0
        grey = x.mean(1, keepdim=True)
        chans = [x]
        for k in (0, 2):
            g = F.avg_pool2d(grey, 2 * k + 1, stride=1, padding=k, count_include_pad=False) if k else grey
            gy, gx = torch.gradient(g[0, 0])
            chans.append(torch.sqrt(gx ** 2 + gy ** 2)[None, None])
        f = torch.cat(chans, 1)                                             # (1, 5, H, W)
        mean = F.adaptive_avg_pool2d(f, n)
        sd = (F.adaptive_avg_pool2d(f * f, n) - mean ** 2).clamp_min(0).sqrt()
        rgb = mean[0, :3]
        value, low = rgb.max(0).values, rgb.min(0).values
        sat = (value - low) / value.clamp_min(1e-6)
        feat = torch.cat([mean[0], sd[0], sat[None], value[None]], 0).numpy()   # (12, n, n)
        flat = feat.reshape(len(feat), -1)
        feat = (feat - flat.mean(1)[:, None, None]) / (flat.std(1)[:, None, None] + 1e-6)
        grid = FeatureGrid.stretched(image.shape[:2], (n, n), 1.0)
        return FeatureMap(unit_cells(feat, self.center), grid)


def dinov2_weights() -> Path | None:
    """Folder of the first DINOv2 weights present under the data root, else None."""
    from ..manifest import locate

    for key in DINOV2_KEYS:
        try:
            return locate(key)
        except (MissingDatasetError, ConfigError, KeyError):
            continue
    return None


def load_dinov2(path: str | Path, device: str | None = None, **kw) -> Dinov2Features:
    """The DINOv2 feature space of one weights folder on ``device`` (None: ``models.default_device``, i.e. the
    study's, ``FROZENSEG_DEVICE``): loaded once per process and shared by every fit, the genome's leave-one-out
    pipelines included, with its memo of patch tokens."""
    return _dinov2(str(Path(path).resolve()), str(device or default_device()), tuple(sorted(kw.items())))


@functools.lru_cache(maxsize=4)
def _dinov2(folder: str, device: str, kw: tuple) -> Dinov2Features:
    """One DINOv2 extractor per (folder, device, settings)."""
    return Dinov2Features.from_pretrained(folder, device=device, **dict(kw))


def resolved_space(spec) -> str | list:
    """What a ``features`` setting means here and now, for cache keys: 'auto' resolved ('dinov2' when its weights
    are present, else 'sam'), and 'dinov2' named with its weights folder's identity; a list maps item by item."""
    if isinstance(spec, (list, tuple)):
        return [resolved_space(s) for s in spec]
    if hasattr(spec, "name") and not isinstance(spec, str):
        return str(spec.name)
    if spec == "auto":
        spec = "dinov2" if dinov2_weights() is not None else "sam"
    if spec == "dinov2":
        path = dinov2_weights()
        return f"dinov2:{path.name}-{folder_id(path)[:16]}" if path is not None else "dinov2:absent"
    return str(spec)


def make_feature_space(spec, model=None, **kw):
    """'sam', 'dinov2', 'colour', 'auto' (DINOv2 when its weights are present, else SAM) or a feature-space object."""
    if callable(spec) and hasattr(spec, "name"):
        return spec
    if spec == "auto":
        spec = "dinov2" if dinov2_weights() is not None else "sam"
    if spec == "sam":
        if model is None:
            raise ConfigError("the 'sam' feature space needs model=<PromptableModel>")
        return SamFeatures(model, **kw)
    if spec == "colour":
        return ColourFeatures(model, **{k: v for k, v in kw.items() if k != "pool"})
    if spec == "dinov2":
        path = dinov2_weights()
        if path is None:
            from ..manifest import locate

            locate(DINOV2_KEYS[0])    # raises the error that says where to put the weights
        return load_dinov2(path, **{k: v for k, v in kw.items() if k != "pool"})
    raise ConfigError(f"unknown feature space {spec!r}; choose 'sam', 'dinov2', 'colour' or 'auto'")
