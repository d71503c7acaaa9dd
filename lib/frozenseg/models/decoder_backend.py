"""The frozen box-promptable model as a concept-search backend: a concept is k sparse prompt tokens decoded by the
frozen mask decoder on cached embeddings (``models.sam3.Sam3Concept`` is the other backend, same interface)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import EmbeddingCache
from ..training import frame_size, frame_target
from .fast_decoder import PreparedDecoder, supports


class DecoderBackend:
    """Concept search through a frozen PromptableModel (LiteMedSAM default): concept = sparse prompt tokens."""

    def __init__(self, model, cache=None, fast: bool = True):
        self.model, self.fast = model, fast
        self.cache = cache or EmbeddingCache()
        self.key = model.key
        self.dim = int(model.prompt_encoder.embed_dim)

    @property
    def cache_id(self) -> str:
        """What the cached features depend on besides the image (the model's weights and preprocessing)."""
        return self.model.cache_id

    def features(self, images, desc: str = "encoding") -> list:
        """Cached embeddings of images (never re-encoded once on disk)."""
        return self.cache.get_many(self.model, list(images), desc=desc, progress=False)

    def _dense(self, b: int) -> torch.Tensor:
        """The prompt encoder's no-mask dense embedding, repeated for ``b`` images."""
        _, dense = self.model.prompt_encoder(points=None, boxes=None, masks=None)
        return dense.expand(b, -1, -1, -1)

    def prepare(self, feats):
        """``f(tokens, idx=None) -> (B, S, S)`` logits on fixed ``feats``, with concept-independent parts precomputed."""
        if self.fast and supports(self.model):
            return PreparedDecoder(self.model, feats)
        return lambda tokens, idx=None: self.reference_logits(feats if idx is None else feats[idx], tokens)

    def logits(self, feats, tokens: torch.Tensor) -> torch.Tensor:
        """Differentiable low-res logits (B, S, S) of the concept ``tokens`` (k, C) on ``feats``."""
        return self.prepare(list(feats))(tokens)

    def reference_logits(self, feats, tokens: torch.Tensor) -> torch.Tensor:
        """``logits`` through the model's own per-image ``decode_tensors`` (the slow reference path)."""
        dev = self.model.device
        img = torch.cat([e.tensor() for e in feats]).to(dev)
        sparse = tokens.to(dev)[None].expand(len(feats), -1, -1)
        low, _ = self.model.decode_tensors(img, sparse, self._dense(len(feats)), multimask=False)
        return low[:, 0]

    def valid_size(self, feat, side: int) -> tuple[int, int]:
        """(h, w) of the image inside a ``side``-pixel low-res frame (the rest is padding)."""
        return frame_size(feat.input_size, self.model.input_frame, side)

    def target(self, mask: np.ndarray, feat, side: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask mapped into the model's low-res frame (soft, resize + pad) and the valid-region mask."""
        return frame_target(mask, feat.input_size, self.model.input_frame, side)

    def to_image(self, low: torch.Tensor, feat) -> np.ndarray:
        """(S, S) low-res logits -> (H, W) logits at the original image size."""
        side = low.shape[-1]
        h, w = self.valid_size(feat, side)
        up = F.interpolate(low[None, None, :h, :w].float().cpu(), size=tuple(feat.original_size), mode="bilinear",
                           align_corners=False)
        return up[0, 0].numpy()

    def box_logits(self, feat, box) -> np.ndarray:
        """(H, W) logits of the frozen model prompted with one xyxy box in original pixels."""
        return self.model.decode(feat, boxes=np.asarray(box, dtype=np.float64)).logits[0]

    @torch.no_grad()
    def box_logits_many(self, feats, boxes, batch: int = 8) -> list[np.ndarray]:
        """``box_logits`` of one xyxy box per image, decoded in batches through the prepared decoder."""
        if not (self.fast and supports(self.model)):
            return [self.box_logits(f, b) for f, b in zip(feats, boxes)]
        out = []
        for i in range(0, len(feats), batch):
            chunk = list(feats[i:i + batch])
            sparse = torch.cat([self.model.prompt_embeddings(f, boxes=np.asarray(b, dtype=np.float64))[0]
                                for f, b in zip(chunk, boxes[i:i + batch])])
            low = PreparedDecoder(self.model, chunk)(sparse)
            out += [self.model.upscale(lo[None, None], f.original_size, f.input_size)[0, 0].float().cpu().numpy()
                    for lo, f in zip(low, chunk)]
        return out

    @torch.no_grad()
    def support_tokens(self, feats, masks, k: int) -> torch.Tensor:
        """(k, C) tokens from the supports themselves: the prompt encoder's embedding of the supports' mean box
        (its two corner tokens) and mean foreground centroid (a positive point token), in the model's input frame;
        tokens beyond three are the mean foreground image embedding, scaled to the prompt tokens' norm."""
        boxes, cents, fg = [], [], []
        for f, m in zip(feats, masks):
            m = np.asarray(m, bool)
            ys, xs = np.nonzero(m)
            sc = lambda xy: self.model.scale_coords(np.asarray(xy, np.float64), f.original_size, f.input_size)
            boxes.append(sc([[xs.min(), ys.min()], [xs.max(), ys.max()]]))
            cents.append(sc([[xs.mean(), ys.mean()]]))
            fg.append(_mean_foreground(f, m, self.model.input_frame))
        dev = self.model.device
        box = torch.as_tensor(np.mean(boxes, 0).reshape(1, 4), dtype=torch.float32, device=dev)
        pt = torch.as_tensor(np.mean(cents, 0)[None], dtype=torch.float32, device=dev)
        sparse, _ = self.model.prompt_encoder(points=(pt, torch.ones(1, 1, dtype=torch.long, device=dev)),
                                              boxes=box, masks=None)
        toks = torch.cat([sparse[0, 1:3], sparse[0, :1]]).float().cpu()        # box corners, then the point
        extra = torch.as_tensor(np.mean(fg, 0), dtype=torch.float32)
        extra = extra / extra.norm().clamp_min(1e-8) * toks.norm(dim=1).mean()
        return torch.cat([toks, extra[None].expand(max(0, k - 3), -1)])[:k].clone()

    def tokens_like(self, k: int) -> tuple[int, int]:
        """Shape of a concept with ``k`` tokens."""
        return (k, self.dim)


def _mean_foreground(feat, mask: np.ndarray, frame: int) -> np.ndarray:
    """Mean (C,) image embedding over the grid cells the mask covers most (at least its best-covered cell)."""
    emb = feat.tensor()[0].numpy()                                 # (C, g, g)
    g = emb.shape[-1]
    h, w = feat.input_size
    t = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    t = F.pad(t, (0, frame - w, 0, frame - h))
    cover = F.adaptive_avg_pool2d(t, g)[0, 0].numpy()
    keep = cover >= min(0.5, float(cover.max()))
    return emb[:, keep].mean(1)
