"""A paired, batched pass of SAM's frozen mask decoder for concept tokens on fixed images.

The model's own ``decode_tensors`` decodes one image at a time (SAM's decoder repeats every image per
prompt) and recomputes everything per call. During a concept fit the images never change, so what does not
depend on the concept is computed once here: image + no-mask embedding, the dense positional encoding, and
the first transformer layer's image-side projections (keys/values of its token-to-image attention, queries
of its image-to-token attention). Every image is then decoded with the concept in one batched call.

The mask upscaling (2x2-stride-2 transposed convs, channel LayerNorm, GELU) acts on each output pixel's
channels alone, so it runs channels-last as matmuls with the sub-pixel offsets kept as extra axes, and the
single mask token's dot product happens before the one final reshuffle into the (S, S) frame: no per-op
NCHW copies. Same arithmetic as SAM's ``MaskDecoder`` with ``multimask_output=False`` up to float rounding
(tested against ``decode_tensors``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def supports(model) -> bool:
    """Whether ``model``'s decoder is a SAM-style MaskDecoder + TwoWayTransformer this module can replay."""
    dec = getattr(model, "mask_decoder", None)
    tr = getattr(dec, "transformer", None)
    need_dec = ("iou_token", "mask_tokens", "output_upscaling", "output_hypernetworks_mlps")
    need_layer = ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token", "mlp", "skip_first_layer_pe")
    return (tr is not None and all(hasattr(dec, a) for a in need_dec) and hasattr(tr, "final_attn_token_to_image")
            and len(getattr(tr, "layers", [])) > 0 and all(hasattr(lay, a) for lay in tr.layers for a in need_layer)
            and upscaling_plan(dec.output_upscaling) is not None)


def upscaling_plan(seq) -> list | None:
    """[("conv", W (Cin, kh*kw*Cout), bias, kh, kw) | ("norm", module) | ("act", module)], or None if unsupported."""
    plan = []
    for m in seq:
        if isinstance(m, nn.ConvTranspose2d):
            kh, kw = m.kernel_size
            if (m.stride != m.kernel_size or m.padding != (0, 0) or m.output_padding != (0, 0) or m.groups != 1
                    or m.dilation != (1, 1)):
                return None
            cin, cout = m.weight.shape[:2]
            w = m.weight.detach().permute(0, 2, 3, 1).reshape(cin, kh * kw * cout)
            b = m.bias.detach() if m.bias is not None else torch.zeros(cout)
            plan.append(("conv", w, b, kh, kw))
        elif type(m).__name__ in ("LayerNorm2d", "ChannelsLastLayerNorm2d") and all(hasattr(m, a) for a in ("weight", "bias", "eps")):
            plan.append(("norm", m))
        elif isinstance(m, (nn.GELU, nn.ReLU)):
            plan.append(("act", m))
        else:
            return None
    return plan if any(p[0] == "conv" for p in plan) else None


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N, C) -> (B, n, N, C / n)."""
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _attend(att, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM's Attention on already projected, head-split q, k, v (B, n, N, c) -> (B, Nq, C)."""
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    out = a @ v
    b, n, t, c = out.shape
    return att.out_proj(out.transpose(1, 2).reshape(b, t, n * c))


def _proj(lin, x: torch.Tensor, n: int) -> torch.Tensor:
    """Linear projection then head split."""
    return _heads(lin(x), n)


class PreparedDecoder:
    """Frozen decoder bound to fixed image embeddings: ``(k, C)`` concept tokens -> ``(B, S, S)`` low-res logits."""

    def __init__(self, model, feats):
        dec = model.mask_decoder
        self.dec, self.tr = dec, dec.transformer
        dev = model.device
        with torch.no_grad():
            img = torch.cat([e.tensor() for e in feats]).to(dev)
            _, dense = model.prompt_encoder(points=None, boxes=None, masks=None)
            src = img + dense
            self.shape = tuple(src.shape)
            self.keys = src.flatten(2).transpose(1, 2).contiguous()                       # (B, N, C)
            self.pe = model.prompt_encoder.get_dense_pe().to(dev).flatten(2).transpose(1, 2).contiguous()  # (1, N, C)
            lay = self.tr.layers[0]
            t2i, i2t = lay.cross_attn_token_to_image, lay.cross_attn_image_to_token
            k = self.keys + self.pe
            self.k0 = _proj(t2i.k_proj, k, t2i.num_heads)
            self.v0 = _proj(t2i.v_proj, self.keys, t2i.num_heads)
            self.q0 = _proj(i2t.q_proj, k, i2t.num_heads)
        self.out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], 0)
        self.plan = upscaling_plan(dec.output_upscaling)

    def __len__(self) -> int:
        return self.shape[0]

    def __call__(self, tokens: torch.Tensor, idx: slice | None = None) -> torch.Tensor:
        """Low-res logits (B, S, S) of ``tokens`` on the prepared images (``idx``: a slice of them)."""
        idx = idx or slice(None)
        keys = self.keys[idx]
        b = keys.shape[0]
        tok = tokens.to(keys.device)
        point = torch.cat([self.out_tokens[None].expand(b, -1, -1), tok[None].expand(b, -1, -1)], 1)
        queries = point
        for i, lay in enumerate(self.tr.layers):
            cached = (self.k0[idx], self.v0[idx], self.q0[idx]) if i == 0 else None
            queries, keys = self._block(lay, queries, keys, point, cached)
        fin = self.tr.final_attn_token_to_image
        q = _proj(fin.q_proj, queries + point, fin.num_heads)
        k = _proj(fin.k_proj, keys + self.pe, fin.num_heads)
        v = _proj(fin.v_proj, keys, fin.num_heads)
        queries = self.tr.norm_final_attn(queries + _attend(fin, q, k, v))
        hyper = self.dec.output_hypernetworks_mlps[0](queries[:, 1, :])                # mask token 0 (single mask)
        return self._masks(keys, hyper)

    def _masks(self, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Upscale the image tokens channels-last (sub-pixel offsets as axes), dot with ``hyper``, reshuffle once."""
        _, _, h, w = self.shape
        b = keys.shape[0]
        x = keys.reshape(b, h, w, -1)
        offsets = []                                          # (kh, kw) of each transposed conv, in order
        for op in self.plan:
            if op[0] == "conv":
                _, wm, bias, kh, kw = op
                x = (x @ wm).unflatten(-1, (kh * kw, -1)) + bias
                x = x.unflatten(-2, (kh, kw))
                offsets.append((kh, kw))
            elif op[0] == "norm":
                m = op[1]
                x = F.layer_norm(x, (x.shape[-1],), m.weight, m.bias, m.eps)
            else:
                x = op[1](x)
        lo = (x.reshape(b, -1, x.shape[-1]) @ hyper[:, :, None]).reshape(x.shape[:-1])
        n = len(offsets)                                      # axes: b, h, w, kh1, kw1, ..., khn, kwn
        order = [0, 1] + [3 + 2 * i for i in range(n)] + [2] + [4 + 2 * i for i in range(n)]
        sh = h * math.prod(o[0] for o in offsets)
        sw = w * math.prod(o[1] for o in offsets)
        return lo.permute(order).reshape(b, sh, sw)

    def _block(self, lay, queries, keys, qpe, cached):
        """One TwoWayAttentionBlock; ``cached`` holds layer 0's image-side projections."""
        sa = lay.self_attn
        if lay.skip_first_layer_pe:
            queries = _attend(sa, *(_proj(p, queries, sa.num_heads) for p in (sa.q_proj, sa.k_proj, sa.v_proj)))
        else:
            q = queries + qpe
            queries = queries + _attend(sa, _proj(sa.q_proj, q, sa.num_heads), _proj(sa.k_proj, q, sa.num_heads),
                                        _proj(sa.v_proj, queries, sa.num_heads))
        queries = lay.norm1(queries)
        t2i, i2t = lay.cross_attn_token_to_image, lay.cross_attn_image_to_token
        q = queries + qpe
        if cached is None:
            k = keys + self.pe
            kk, vv = _proj(t2i.k_proj, k, t2i.num_heads), _proj(t2i.v_proj, keys, t2i.num_heads)
        else:
            kk, vv = cached[0], cached[1]
        queries = lay.norm2(queries + _attend(t2i, _proj(t2i.q_proj, q, t2i.num_heads), kk, vv))
        queries = lay.norm3(queries + lay.mlp(queries))
        q = queries + qpe
        qi = cached[2] if cached is not None else _proj(i2t.q_proj, keys + self.pe, i2t.num_heads)
        attn = _attend(i2t, qi, _proj(i2t.k_proj, q, i2t.num_heads), _proj(i2t.v_proj, queries, i2t.num_heads))
        return queries, lay.norm4(keys + attn)
