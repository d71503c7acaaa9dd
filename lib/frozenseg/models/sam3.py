"""SAM3 concept backend through transformers' ``Sam3Model``: a learned concept enters as ``text_embeds``.

The concept P (k, C) replaces the text encoder's output: ``text_embeds = BaseModelOutputWithPooling(pooler_output=P)``
(Sam3Model reads ``text_embeds.pooler_output``). The concept's mask is SAM3's semantic-segmentation head; the HUE
box re-prompt uses SAM3's geometry prompt with a neutral (zero) text token and keeps the best-scoring query's mask.
Real weights come from the manifest key ``sam3`` (``load_sam3``); tests use a tiny random ``Sam3Config``.
Vision features (the slowest encoder here, at 1008 px) are cached on disk beside the other embeddings,
``<cache>/embeddings/<cache_id>/<hh>/<image hash>.npz``, keyed by weights id + preprocessing + image content;
a concept fit with no settings uses ``concept.core.SAM3_TEXT_SETTINGS`` (the source's lr 5e-4 -> 5e-6).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import record
from ..errors import DataError

log = logging.getLogger(__name__)
MANIFEST_KEY = "sam3"


@dataclass
class Sam3Features:
    """Cached vision features of one image (FPN levels and their position encodings)."""

    fpn: tuple
    pos: tuple
    original_size: tuple[int, int]


class Sam3Concept:
    """Concept-search backend over a frozen Sam3Model (same interface as ``concept.DecoderBackend``).

    ``cache``: an ``EmbeddingCache`` whose root also holds the vision features (None: kept in memory only).
    """

    key = "sam3"
    label = "SAM3 (generic, concept prompts)"

    def __init__(self, model, image_size: int, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), weights_id: str | None = None,
                 cache=None):
        self.model = model.eval()
        record("sam3", self.model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.image_size, self.weights_id = int(image_size), weights_id or _state_id(model)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.dim = int(model.config.detr_encoder_config.hidden_size)
        self.cache = cache
        self._memo: dict[str, Sam3Features] = {}

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (inputs are moved there, features are kept on the CPU)."""
        return next(self.model.parameters()).device

    @property
    def preprocess_id(self) -> str:
        """Short identity of the preprocessing (input side, resize, normalisation)."""
        spec = json.dumps([self.image_size, "bilinear-antialias", self.mean.flatten().tolist(),
                           self.std.flatten().tolist()])
        return f"sq{self.image_size}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"

    @property
    def cache_id(self) -> str:
        """What the cached features depend on besides the image: model, weights, preprocessing, and the device type
        and dtype the vision encoder computes in."""
        from .base import compute_id

        return f"{self.key}-{self.weights_id[:16]}-{self.preprocess_id}-{compute_id(self.model.vision_encoder)}"

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, cache=None, device: str | None = None) -> "Sam3Concept":
        """Load SAM3 from ``path`` or the manifest's ``sam3`` folder onto ``device`` (None: ``default_device``, the
        study's); MissingDatasetError says how to get the weights."""
        from transformers import Sam3Model

        from ..manifest import locate, require
        from .base import default_device

        path = require(MANIFEST_KEY, path) if path is not None else locate(MANIFEST_KEY)
        weights_id = _folder_id(path)
        model = Sam3Model.from_pretrained(str(path)).to(device or default_device())
        pre = path / "preprocessor_config.json"
        cfg = json.loads(pre.read_text()) if pre.is_file() else {}
        size = (cfg.get("size") or {}).get("height", model.config.vision_config.image_size)
        return cls(model, size, cfg.get("image_mean", (0.5,) * 3), cfg.get("image_std", (0.5,) * 3),
                   weights_id=weights_id, cache=cache)

    @classmethod
    def tiny(cls, seed: int = 0, image_size: int = 56, cache=None) -> "Sam3Concept":
        """A tiny randomly initialised SAM3 (for tests: forward and backward in milliseconds)."""
        from transformers import Sam3Model

        torch.manual_seed(seed)
        return cls(Sam3Model(tiny_config(image_size)), image_size, cache=cache)

    # ---- images -> cached features ------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H,W,3) uint8 -> (1,3,S,S): resized to the model's square input, scaled to [0,1], normalised."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                          antialias=True)
        return ((x - self.mean) / self.std).to(self.device)

    def feature_path(self, image: np.ndarray) -> Path | None:
        """Where the vision features of ``image`` live on disk (None without a cache)."""
        from ..cache import image_hash

        if self.cache is None:
            return None
        key = image_hash(image)
        return Path(self.cache.root) / self.cache_id / key[:2] / f"{key}.npz"

    def features(self, images, desc: str = "encoding") -> list[Sam3Features]:
        """Vision features of each image: read from the disk cache, else encoded once and stored atomically."""
        from tqdm.auto import tqdm

        from ..cache import image_hash

        images = list(images)
        out: list[Sam3Features | None] = [None] * len(images)
        todo = []
        for i, im in enumerate(images):
            out[i] = self._memo.get(image_hash(im)) if self.cache is None else self._load(self.feature_path(im))
            if out[i] is None:
                todo.append(i)
            elif self.cache is not None:
                self.cache.hits += 1
        for i in tqdm(todo, desc=f"{desc} ({self.key})", unit="img", disable=not todo):
            out[i] = self._encode(images[i])
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _encode(self, image: np.ndarray) -> Sam3Features:
        """Run the vision encoder on one image and store its FPN levels (position encodings are recomputed)."""
        from ..cache import image_hash
        from ..io import atomic_path

        v = self.model.get_vision_features(pixel_values=self.preprocess(image))
        fpn = tuple(t.detach().float().cpu() for t in v.fpn_hidden_states)
        feat = self._features(fpn, tuple(image.shape[:2]))
        if self.cache is None:
            self._memo[image_hash(image)] = feat
            return feat
        self.cache.misses += 1
        with atomic_path(self.feature_path(image)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, original_size=np.asarray(feat.original_size),
                         **{f"fpn{i}": t[0].numpy() for i, t in enumerate(fpn)})
        return feat

    def _load(self, path: Path) -> Sam3Features | None:
        """Features from one cache file; an unreadable file is removed and counts as a miss."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                n = sum(1 for k in z.files if k.startswith("fpn"))
                fpn = tuple(torch.from_numpy(np.ascontiguousarray(z[f"fpn{i}"], dtype=np.float32))[None]
                            for i in range(n))
                size = tuple(int(v) for v in z["original_size"])
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a miss
            log.warning("SAM3 feature cache entry %s is unreadable (%s); re-encoding", path, exc)
            path.unlink(missing_ok=True)
            return None
        if n == 0:
            path.unlink(missing_ok=True)
            return None
        return self._features(fpn, size)

    def _features(self, fpn: tuple, original_size: tuple[int, int]) -> Sam3Features:
        """Sam3Features with the neck's sine position encodings (a function of each level's shape only)."""
        enc = self.model.vision_encoder.neck.position_encoding
        pos = tuple(enc(t.shape, t.device, t.dtype) for t in fpn)
        return Sam3Features(fpn, pos, tuple(int(v) for v in original_size))

    def _vision(self, feats):
        """Batch per-image features into one Sam3VisionEncoderOutput."""
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        lv, dev = range(len(feats[0].fpn)), self.device
        return Sam3VisionEncoderOutput(
            fpn_hidden_states=tuple(torch.cat([f.fpn[i] for f in feats]).to(dev) for i in lv),
            fpn_position_encoding=tuple(torch.cat([f.pos[i] for f in feats]).to(dev) for i in lv))

    # ---- the concept interface --------------------------------------------------------------
    def logits(self, feats, tokens: torch.Tensor) -> torch.Tensor:
        """Differentiable (B, s, s) semantic logits of the concept ``tokens`` (k, C), injected as text_embeds."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        p = tokens.to(self.device)[None].expand(len(feats), -1, -1)
        out = self.model(vision_embeds=self._vision(feats), text_embeds=BaseModelOutputWithPooling(pooler_output=p))
        return out.semantic_seg[:, 0]

    def target(self, mask: np.ndarray, feat: Sam3Features, side: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask resized (area) into the s x s output frame; every pixel is valid (no padding)."""
        m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
        return F.interpolate(m, size=(side, side), mode="area")[0, 0], torch.ones(side, side, dtype=torch.bool)

    def to_image(self, low: torch.Tensor, feat: Sam3Features) -> np.ndarray:
        """(s, s) logits -> (H, W) logits at the original size."""
        up = F.interpolate(low[None, None].float().cpu(), size=tuple(feat.original_size), mode="bilinear",
                           align_corners=False)
        return up[0, 0].numpy()

    @torch.no_grad()
    def box_logits(self, feat: Sam3Features, box) -> np.ndarray:
        """(H, W) logits of the best-scoring query for one xyxy box prompt (neutral text token)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        h, w = feat.original_size
        x0, y0, x1, y1 = (float(v) for v in box)
        cxcywh = torch.tensor([[[(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0 + 1) / w, (y1 - y0 + 1) / h]]],
                              device=self.device)
        text = BaseModelOutputWithPooling(pooler_output=torch.zeros(1, 1, self.dim, device=self.device))
        out = self.model(vision_embeds=self._vision([feat]), text_embeds=text, input_boxes=cxcywh)
        best = int(out.pred_logits[0].argmax())
        return self.to_image(out.pred_masks[0, best], feat)

    def tokens_like(self, k: int) -> tuple[int, int]:
        """Shape of a concept with ``k`` tokens."""
        return (k, self.dim)


def tiny_config(image_size: int = 56):
    """A tiny ``Sam3Config`` (hidden size 32, one or two layers per part) for tests."""
    from transformers import Sam3Config

    g, h = image_size // 14, 32
    return Sam3Config(
        vision_config=dict(backbone_config=dict(model_type="sam3_vit_model", hidden_size=h, intermediate_size=2 * h,
                                                num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
                                                patch_size=14, window_size=2, global_attn_indexes=[1],
                                                pretrain_image_size=image_size),
                           fpn_hidden_size=h, backbone_feature_sizes=[[4 * g, 4 * g], [2 * g, 2 * g], [g, g]]),
        text_config=dict(model_type="clip_text_model", vocab_size=99, hidden_size=h, intermediate_size=2 * h,
                         projection_dim=h, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=8,
                         bos_token_id=97, eos_token_id=98, pad_token_id=98),
        geometry_encoder_config=dict(hidden_size=h, num_layers=1, num_attention_heads=2, intermediate_size=2 * h),
        detr_encoder_config=dict(hidden_size=h, num_layers=1, num_attention_heads=2, intermediate_size=2 * h),
        detr_decoder_config=dict(hidden_size=h, num_layers=1, num_queries=5, num_attention_heads=2,
                                 intermediate_size=2 * h),
        mask_decoder_config=dict(hidden_size=h, num_upsampling_stages=3, num_attention_heads=2),
    )


def load_sam3(path: str | Path | None = None, cache=None, device: str | None = None) -> Sam3Concept:
    """SAM3 from ``path`` or the manifest's ``sam3`` folder under FROZENSEG_DATA (weights loaded once per process)."""
    from .base import default_device
    from ..manifest import locate, require

    folder = require(MANIFEST_KEY, path) if path is not None else locate(MANIFEST_KEY)
    base = _load_folder(str(Path(folder).resolve()), device or default_device())
    return Sam3Concept(base.model, base.image_size, base.mean.flatten().tolist(), base.std.flatten().tolist(),
                       weights_id=base.weights_id, cache=cache)


@functools.lru_cache(maxsize=2)
def _load_folder(folder: str, device: str) -> Sam3Concept:
    """One SAM3 folder loaded onto ``device`` (cached: the real weights take minutes to read)."""
    return Sam3Concept.from_pretrained(folder, device=device)


def _state_id(model) -> str:
    """Identity of in-memory weights (e.g. a random tiny model): sha256 of every tensor in the state dict."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + np.ascontiguousarray(v.detach().float().cpu().numpy()).tobytes())
    return h.hexdigest()


def _folder_id(path: Path) -> str:
    """Identity of the SAM3 weights folder (``base.folder_id``); DataError when it holds no safetensors."""
    from .base import folder_id

    if not any(path.glob("*.safetensors")):
        raise DataError(path, "no *.safetensors in the SAM3 folder", "copy the facebook/sam3 files there (see data_manifest.yaml)")
    return folder_id(path)
