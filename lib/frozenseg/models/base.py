"""One small interface over SAM-family models: encode an image once, decode from any prompt."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError


@dataclass
class Embedding:
    """An image embedding plus the geometry needed to map prompts and masks in and out."""

    features: np.ndarray               # (C, h, w) float32
    original_size: tuple[int, int]     # (H, W) of the image
    input_size: tuple[int, int]        # (h, w) of the resized image inside the padded model input

    def tensor(self) -> torch.Tensor:
        """Features as a (1, C, h, w) float32 tensor."""
        return torch.from_numpy(np.ascontiguousarray(self.features, dtype=np.float32))[None]


@dataclass
class Prediction:
    """Decoder output for B prompts (or K masks of one prompt with ``multimask``)."""

    logits: np.ndarray                 # (B, H, W) float32 at the original image size; mask = logits > 0
    iou: np.ndarray                    # (B,) the decoder's predicted IoU
    low_res: np.ndarray                # (B, 256, 256) low-resolution logits, reusable as ``mask_input``
    extra: dict = field(default_factory=dict)

    @property
    def masks(self) -> np.ndarray:
        """Binary masks (B, H, W)."""
        return self.logits > 0

    def best(self) -> np.ndarray:
        """The mask with the highest predicted IoU."""
        return self.masks[int(np.argmax(self.iou))]


class ChannelsLastLayerNorm2d(torch.nn.Module):
    """SAM's LayerNorm2d (normalise over channels) computed as ``F.layer_norm`` on the channels-last view.

    Same parameters and state-dict keys as the original; same values to float rounding (tests/test_models.py).
    """

    def __init__(self, weight: torch.nn.Parameter, bias: torch.nn.Parameter, eps: float):
        super().__init__()
        self.weight, self.bias, self.eps = weight, bias, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def channels_last_upscaling(mask_decoder: torch.nn.Module) -> torch.nn.Module:
    """Run the SAM decoder's output upscaling (2x2 stride-2 transposed convs + LayerNorm2d) in channels-last.

    The decoder hands this block a (B, C, H, W) view of its (B, HW, C) tokens, which is already channels-last in
    memory; with channels-last weights PyTorch's CPU kernels take the fast path (``make bench`` times the decoder). Weights, state-dict keys and outputs are unchanged (to float rounding).
    """
    up = getattr(mask_decoder, "output_upscaling", None)
    if not isinstance(up, torch.nn.Sequential):
        return mask_decoder
    for i, layer in enumerate(up):
        if type(layer).__name__ == "LayerNorm2d" and hasattr(layer, "eps"):
            up[i] = ChannelsLastLayerNorm2d(layer.weight, layer.bias, layer.eps)
    up.to(memory_format=torch.channels_last)
    return mask_decoder


class PromptableModel:
    """Base class: subclasses define ``preprocess``, ``scale_coords``, ``upscale`` and own the torch modules."""

    key: str = "base"
    label: str = "base"
    preprocess_id: str = "none"
    input_frame: int = 256             # side of the square model input
    is_medical: bool = False

    def __init__(self, image_encoder, prompt_encoder, mask_decoder, weights_id: str):
        self.image_encoder = image_encoder.eval()
        self.prompt_encoder = prompt_encoder.eval()
        self.mask_decoder = channels_last_upscaling(mask_decoder).eval()
        self.weights_id = weights_id
        self.device = torch.device("cpu")
        self._encoder = None            # the engine that encodes (models.engine), made at the first encode
        self.encoder_engine, self.encoder_note = "not yet run", ""
        for p in self.parameters():
            p.requires_grad_(False)

    def to(self, device: str | torch.device) -> "PromptableModel":
        """Move the three parts to ``device`` (e.g. "cuda"); inputs and outputs stay NumPy on the CPU."""
        self.device = torch.device(device)
        for m in (self.image_encoder, self.prompt_encoder, self.mask_decoder):
            m.to(self.device)
        self._encoder = None            # the engine depends on the device: chosen again at the next encode
        return self

    def encoder(self):
        """The callable that runs the frozen image encoder: OpenVINO on the CPU by default, else eager PyTorch
        (``frozenseg.models.engine``); ``encoder_engine`` names it once it is made."""
        if self._encoder is None:
            self.select_encoder()
        return self._encoder

    def select_encoder(self, engine: str | None = None) -> str:
        """Make the encoder engine now: 'auto', 'openvino' or 'torch' (None: ``FROZENSEG_ENCODER``); returns the
        engine that will encode (``auto`` may fall back to 'torch', ``encoder_note`` says why)."""
        from .engine import make_encoder

        self._encoder, self.encoder_engine, self.encoder_note = make_encoder(self, engine)
        return self.encoder_engine

    # ---- identity -------------------------------------------------------------------------
    @property
    def cache_id(self) -> str:
        """What an embedding depends on besides the image: model, weights, preprocessing, and the device type and
        dtype the encoder computes in (a GPU's embeddings never mix with the CPU's in one cache)."""
        return f"{self.key}-{self.weights_id[:16]}-{self.preprocess_id}-{compute_id(self.image_encoder)}"

    def parameters(self):
        """All parameters of the three parts."""
        for m in (self.image_encoder, self.prompt_encoder, self.mask_decoder):
            yield from m.parameters()

    # ---- subclass hooks -------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(H,W,3) uint8 -> ((1,3,S,S) float tensor, (h, w) resized size)."""
        raise NotImplementedError

    def scale_coords(self, xy: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
        """Map (..., 2) xy pixel coordinates of the original image into the model's input frame."""
        raise NotImplementedError

    def upscale(self, low_res: torch.Tensor, original_size, input_size) -> torch.Tensor:
        """(B,1,256,256) low-res logits -> (B,1,H,W) logits at the original size."""
        raise NotImplementedError

    # ---- encode / decode ------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, image: np.ndarray) -> Embedding:
        """Run the image encoder once (use ``frozenseg.cache`` to keep the result)."""
        check_image(image)
        x, input_size = self.preprocess(image)
        feats = self.encoder()(x.to(self.device))[0].float().cpu().numpy()
        if not np.isfinite(feats).all():
            raise DataError(None, f"{self.key} encoder produced non-finite features", "check the input image for NaN")
        return Embedding(features=feats, original_size=tuple(image.shape[:2]), input_size=tuple(input_size))

    def prompt_embeddings(self, emb: Embedding, boxes=None, points=None, point_labels=None, mask_input=None):
        """Sparse (B,k,C) and dense (B,C,h,w) prompt embeddings for prompts in original pixel coordinates."""
        box_t = pts = None
        if boxes is not None:
            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)
            box_t = torch.as_tensor(self.scale_coords(b, emb.original_size, emb.input_size), dtype=torch.float32,
                                    device=self.device)
            box_t = box_t.reshape(-1, 4)
        if points is not None:
            p = np.asarray(points, dtype=np.float64)
            p = p[None] if p.ndim == 2 else p
            lab = np.asarray(point_labels if point_labels is not None else np.ones(p.shape[:2]), dtype=np.int64)
            lab = lab[None] if lab.ndim == 1 else lab
            if lab.shape != p.shape[:2]:
                raise ConfigError(f"point_labels shape {lab.shape} does not match points {p.shape[:2]}")
            pts = (torch.as_tensor(self.scale_coords(p, emb.original_size, emb.input_size), dtype=torch.float32,
                                   device=self.device), torch.as_tensor(lab, device=self.device))
        m = None
        if mask_input is not None:
            m = torch.as_tensor(np.asarray(mask_input, dtype=np.float32), device=self.device)
            m = m.reshape(-1, 1, *m.shape[-2:])
        return self.prompt_encoder(points=pts, boxes=box_t, masks=m)

    def decode_tensors(self, image_embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor,
                       multimask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable decoder call: (B,C,h,w) embeddings, one prompt each -> (B,K,256,256) logits, (B,K) IoU."""
        if image_embeddings.shape[0] != sparse.shape[0]:
            raise ConfigError(f"{image_embeddings.shape[0]} image embeddings for {sparse.shape[0]} prompts; "
                              "pass one prompt per embedding (repeat the embedding for several prompts)")
        outs, ious = [], []
        pe = self.prompt_encoder.get_dense_pe()
        for i in range(sparse.shape[0]):    # SAM's decoder repeats one image per prompt; keep images and prompts paired
            lo, iou = self.mask_decoder(image_embeddings=image_embeddings[i:i + 1], image_pe=pe,
                                        sparse_prompt_embeddings=sparse[i:i + 1],
                                        dense_prompt_embeddings=dense[i:i + 1], multimask_output=multimask)
            outs.append(lo)
            ious.append(iou)
        return torch.cat(outs), torch.cat(ious)

    fast_decode = True       # single-mask decodes through models.fast_decoder when the decoder is SAM-style

    def _decode_batch(self, img, sparse, dense, multimask: bool):
        """(B,K,S,S) logits and (B,K) IoU of B paired prompts: the batched fast pass where it applies."""
        from .fast_decoder import PreparedDecoder, supports

        if multimask or not self.fast_decode or not supports(self):
            return self.decode_tensors(img, sparse, dense, multimask=multimask)
        low, iou = PreparedDecoder(self, images=img, dense=dense, cache=False)(sparse, with_iou=True)
        return low[:, None], iou[:, None]

    @torch.no_grad()
    def decode(self, emb: Embedding, boxes=None, points=None, point_labels=None, mask_input=None,
               sparse_embeddings=None, multimask: bool = False) -> Prediction:
        """Decode B prompts on one image. Boxes are xyxy and points xy in original pixel coordinates."""
        if boxes is None and points is None and mask_input is None and sparse_embeddings is None:
            raise ConfigError("decode needs at least one prompt: boxes, points, mask_input or sparse_embeddings")
        sparse, dense = self.prompt_embeddings(emb, boxes, points, point_labels, mask_input)
        if sparse_embeddings is not None:
            extra = torch.as_tensor(sparse_embeddings, dtype=torch.float32, device=self.device)
            extra = extra[None] if extra.ndim == 2 else extra
            sparse = extra if sparse.shape[1] == 0 else torch.cat([sparse.expand(extra.shape[0], -1, -1), extra], 1)
        b = sparse.shape[0]
        if dense.shape[0] != b:
            dense = dense.expand(b, -1, -1, -1)
        img = emb.tensor().to(self.device).expand(b, -1, -1, -1)
        low, iou = self._decode_batch(img, sparse, dense, multimask)
        k = low.shape[1]
        up = self.upscale(low.reshape(b * k, 1, *low.shape[-2:]), emb.original_size, emb.input_size)
        logits = up.reshape(b * k, *emb.original_size).float().cpu().numpy()
        return Prediction(logits=logits, iou=iou.reshape(-1).float().cpu().numpy(),
                          low_res=low.reshape(b * k, *low.shape[-2:]).float().cpu().numpy())


def check_image(image: np.ndarray) -> None:
    """Raise DataError unless ``image`` is a finite (H, W, 3) uint8 array."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(None, f"expected an (H, W, 3) image, got {getattr(image, 'shape', type(image))}",
                        "convert with frozenseg.data.files.to_rgb_uint8")
    if image.dtype != np.uint8:
        raise DataError(None, f"expected uint8 pixels, got {image.dtype}", "convert with to_rgb_uint8")


def minmax01(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalise to [0, 1] (a constant image maps to zeros)."""
    lo, hi = x.min(), x.max()
    return (x - lo) / torch.clamp(hi - lo, min=1e-8)


def resize_longest(image: np.ndarray, side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H,W,3) uint8 -> (1,3,h,w) float tensor with the longest side = ``side`` (bilinear, antialiased)."""
    h, w = image.shape[:2]
    s = side / max(h, w)
    nh, nw = int(h * s + 0.5), int(w * s + 0.5)
    x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float()
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    return x, (nh, nw)


def compute_id(module: torch.nn.Module) -> str:
    """Device type and dtype of a module's parameters, e.g. 'cpu-float32' (part of the cache keys)."""
    p = next(module.parameters(), None)
    if p is None:
        return "cpu-float32"
    return f"{p.device.type}-{str(p.dtype).removeprefix('torch.')}"


def folder_id(path) -> str:
    """Identity of a weights folder: sha256 of its files' names and sizes and its JSON configs (no full-file hash)."""
    from pathlib import Path

    h = hashlib.sha256()
    for p in sorted(Path(path).glob("*")):
        if p.is_file():
            h.update(p.name.encode() + str(p.stat().st_size).encode())
            if p.suffix == ".json":
                h.update(p.read_bytes())
    return h.hexdigest()


def state_dict_hash(*modules) -> str:
    """sha256 of the parameters of randomly initialised modules (their weights id)."""
    h = hashlib.sha256()
    for m in modules:
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def default_device() -> str:
    """'cuda' when a GPU is visible (the full profile), else 'cpu' (``FROZENSEG_DEVICE`` overrides)."""
    import os

    return os.environ.get("FROZENSEG_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
