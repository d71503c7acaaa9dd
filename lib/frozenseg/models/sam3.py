"""SAM3 concept backend through transformers' ``Sam3Model``: a learned concept enters as ``text_embeds``.

The concept P (k, C) replaces the text encoder's output: ``text_embeds = BaseModelOutputWithPooling(pooler_output=P)``
(Sam3Model reads ``text_embeds.pooler_output``). The concept's mask is SAM3's semantic-segmentation head; the HUE
box re-prompt uses SAM3's geometry prompt with a neutral (zero) text token and keeps the best-scoring query's mask.
Real weights come from the manifest key ``sam3``; tests use a tiny random ``Sam3Config``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError


@dataclass
class Sam3Features:
    """Cached vision features of one image (FPN levels and their position encodings)."""

    fpn: tuple
    pos: tuple
    original_size: tuple[int, int]


class Sam3Concept:
    """Concept-search backend over a frozen Sam3Model (same interface as ``concept.DecoderBackend``)."""

    key = "sam3"
    label = "SAM3 (generic, concept prompts)"

    def __init__(self, model, image_size: int, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), weights_id: str = "random"):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.image_size, self.weights_id = int(image_size), weights_id
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.dim = int(model.config.detr_encoder_config.hidden_size)
        self._memo: dict[str, Sam3Features] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> "Sam3Concept":
        """Load SAM3 from ``path`` or the manifest's ``sam3`` folder (MissingDatasetError says how to get it)."""
        from transformers import Sam3Model

        from ..manifest import locate

        path = Path(path) if path is not None else locate("sam3")
        model = Sam3Model.from_pretrained(str(path))
        pre = path / "preprocessor_config.json"
        cfg = json.loads(pre.read_text()) if pre.is_file() else {}
        size = (cfg.get("size") or {}).get("height", model.config.vision_config.image_size)
        return cls(model, size, cfg.get("image_mean", (0.5,) * 3), cfg.get("image_std", (0.5,) * 3),
                   weights_id=_folder_id(path))

    @classmethod
    def tiny(cls, seed: int = 0, image_size: int = 56) -> "Sam3Concept":
        """A tiny randomly initialised SAM3 (for tests: forward and backward in milliseconds)."""
        from transformers import Sam3Config, Sam3Model

        torch.manual_seed(seed)
        g, h = image_size // 14, 32
        cfg = Sam3Config(
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
        return cls(Sam3Model(cfg), image_size)

    # ---- images -> cached features ------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H,W,3) uint8 -> (1,3,S,S): resized to the model's square input, scaled to [0,1], normalised."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                          antialias=True)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def features(self, images, desc: str = "encoding") -> list[Sam3Features]:
        """Vision features of each image, encoded once per process (kept in memory by content hash)."""
        out = []
        for im in images:
            key = hashlib.sha256(np.ascontiguousarray(im).tobytes() + str(im.shape).encode()).hexdigest()
            if key not in self._memo:
                v = self.model.get_vision_features(pixel_values=self.preprocess(im))
                self._memo[key] = Sam3Features(tuple(v.fpn_hidden_states), tuple(v.fpn_position_encoding),
                                               tuple(im.shape[:2]))
            out.append(self._memo[key])
        return out

    def _vision(self, feats):
        """Batch per-image features into one Sam3VisionEncoderOutput."""
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        lv = range(len(feats[0].fpn))
        return Sam3VisionEncoderOutput(fpn_hidden_states=tuple(torch.cat([f.fpn[i] for f in feats]) for i in lv),
                                       fpn_position_encoding=tuple(torch.cat([f.pos[i] for f in feats]) for i in lv))

    # ---- the concept interface --------------------------------------------------------------
    def logits(self, feats, tokens: torch.Tensor) -> torch.Tensor:
        """Differentiable (B, s, s) semantic logits of the concept ``tokens`` (k, C), injected as text_embeds."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        p = tokens[None].expand(len(feats), -1, -1)
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
        cxcywh = torch.tensor([[[(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0 + 1) / w, (y1 - y0 + 1) / h]]])
        text = BaseModelOutputWithPooling(pooler_output=torch.zeros(1, 1, self.dim))
        out = self.model(vision_embeds=self._vision([feat]), text_embeds=text, input_boxes=cxcywh)
        best = int(out.pred_logits[0].argmax())
        return self.to_image(out.pred_masks[0, best], feat)

    def tokens_like(self, k: int) -> tuple[int, int]:
        """Shape of a concept with ``k`` tokens."""
        return (k, self.dim)


def _folder_id(path: Path) -> str:
    """Identity of a weights folder: sha256 of its config plus file sizes (no full-file hashing)."""
    h = hashlib.sha256()
    for p in sorted(path.glob("*")):
        if p.is_file():
            h.update(p.name.encode() + str(p.stat().st_size).encode())
            if p.suffix == ".json":
                h.update(p.read_bytes())
    if not any(path.glob("*.safetensors")):
        raise DataError(path, "no *.safetensors in the SAM3 folder", "copy the facebook/sam3 files there (see data_manifest.yaml)")
    return h.hexdigest()
