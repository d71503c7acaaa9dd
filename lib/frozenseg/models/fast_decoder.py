"""A paired, batched pass of SAM's mask decoder (single mask) for prompts on fixed image embeddings.

The model's own ``decode_tensors`` decodes one image at a time (SAM's decoder repeats every image per
prompt) and recomputes everything per call. During a concept fit the images never change, so what does not
depend on the concept is computed once here: image + no-mask embedding, the dense positional encoding, and
the first transformer layer's image-side projections (keys/values of its token-to-image attention, queries
of its image-to-token attention). Every image is then decoded with the concept in one batched call.

Three rearrangements keep the per-step work small on a CPU, all exact up to float rounding:
- cross-attention between the ~9 prompt tokens and the 64 x 64 image tokens pushes the token side through
  the projection weights (rank heads x tokens) instead of projecting every image token (``_tokens_to_image``,
  ``_image_to_tokens``);
- the final token-to-image attention runs for the one mask token whose output is used (single mask);
- the mask upscaling (2x2-stride-2 transposed convs, channel LayerNorm, GELU, then the dot with the mask
  token's hypernetwork vector) acts on each image token's channels alone, so it runs channels-last as
  matmuls over cache-sized chunks of image tokens (``_PixelChunks``), with the sub-pixel offsets kept as
  axes and one final reshuffle into the (S, S) frame.

With frozen weights (concept fits), three autograd Functions write out their backward so that the (B, N, C)
image side is written as few times as possible: ``_TokensOverImage`` (tokens attend to the image; one stacked
product for the image tokens' two uses), ``_ImageOverTokens`` (image attends to tokens, residual included)
and ``_FrozenPixels`` (the upscaling chunks, ATen's backward kernels instead of a graph per chunk). Each is
checked with ``torch.autograd.gradcheck`` in double precision.

Same arithmetic as SAM's ``MaskDecoder`` with ``multimask_output=False`` (logits and gradients tested against
``decode_tensors``).
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
    need_dec = ("iou_token", "mask_tokens", "output_upscaling", "output_hypernetworks_mlps", "iou_prediction_head")
    need_layer = ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token", "mlp", "skip_first_layer_pe")
    return (tr is not None and all(hasattr(dec, a) for a in need_dec) and hasattr(tr, "final_attn_token_to_image")
            and len(getattr(tr, "layers", [])) > 0 and all(hasattr(lay, a) for lay in tr.layers for a in need_layer)
            and upscaling_plan(dec.output_upscaling) is not None)


def upscaling_plan(seq, detach: bool = True) -> tuple[list, list] | None:
    """(ops, weights) replaying an output-upscaling Sequential channels-last, or None if unsupported.

    ops: ("conv", kh, kw, iw, ib) | ("norm", eps, iw, ib) | ("act", module), where iw/ib index ``weights``;
    a conv's weight is laid out (Cin, kh*kw*Cout). ``detach=False`` keeps the weights differentiable.
    """
    ops, weights = [], []

    def add(t):
        weights.append(t.detach() if detach else t)
        return len(weights) - 1

    for m in seq:
        if isinstance(m, nn.ConvTranspose2d):
            kh, kw = m.kernel_size
            if (m.stride != m.kernel_size or m.padding != (0, 0) or m.output_padding != (0, 0) or m.groups != 1
                    or m.dilation != (1, 1)):
                return None
            cin, cout = m.weight.shape[:2]
            w = m.weight.permute(0, 2, 3, 1).reshape(cin, kh * kw * cout)
            b = m.bias if m.bias is not None else torch.zeros(cout, device=m.weight.device)
            ops.append(("conv", kh, kw, add(w), add(b)))
        elif type(m).__name__ in ("LayerNorm2d", "ChannelsLastLayerNorm2d") and all(hasattr(m, a) for a in ("weight", "bias", "eps")):
            ops.append(("norm", m.eps, add(m.weight), add(m.bias)))
        elif isinstance(m, (nn.GELU, nn.ReLU)):
            ops.append(("act", m))
        else:
            return None
    return (ops, weights) if any(op[0] == "conv" for op in ops) else None


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N, C) -> (B, n, N, C / n)."""
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _attend(att, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_t: bool = False) -> torch.Tensor:
    """SAM's Attention on already projected, head-split q, k, v (B, n, N, c) -> (B, Nq, C); ``k_t``: k is (B, n, c, N)."""
    a = torch.softmax(q @ (k if k_t else k.transpose(-1, -2)) / math.sqrt(q.shape[-1]), dim=-1)
    out = a @ v
    b, n, t, c = out.shape
    return att.out_proj(out.transpose(1, 2).reshape(b, t, n * c))


def _proj(lin, x: torch.Tensor, n: int) -> torch.Tensor:
    """Linear projection then head split."""
    return _heads(lin(x), n)


class PreparedDecoder:
    """A decoder bound to fixed image embeddings: prompt tokens -> ``(B, S, S)`` low-res logits (single mask).

    Frozen (default): the decoder's weights are constants and layer 0's image-side projections are computed
    once (``cache=False`` skips that for a single call). ``trainable=True``: nothing weight-dependent is cached,
    so gradients reach every decoder weight (few-shot decoder tuning).
    """

    def __init__(self, model, feats=None, *, images: torch.Tensor | None = None, dense: torch.Tensor | None = None,
                 trainable: bool = False, cache: bool = True):
        dec = model.mask_decoder
        self.dec, self.tr = dec, dec.transformer
        dev = model.device
        with torch.no_grad():
            img = torch.cat([e.tensor() for e in feats]).to(dev) if images is None else images.to(dev)
            if dense is None:
                _, dense = model.prompt_encoder(points=None, boxes=None, masks=None)
            src = img + dense
            self.shape = tuple(src.shape)
            self.keys = src.flatten(2).transpose(1, 2).contiguous()                       # (B, N, C)
            self.pe = model.prompt_encoder.get_dense_pe().to(dev).flatten(2).transpose(1, 2).contiguous()  # (1, N, C)
            self.cache0 = None
            if cache and not trainable:                     # pays off when the same images are decoded again
                lay = self.tr.layers[0]
                t2i, i2t = lay.cross_attn_token_to_image, lay.cross_attn_image_to_token
                k = self.keys + self.pe
                self.cache0 = (_proj(t2i.k_proj, k, t2i.num_heads).transpose(-1, -2).contiguous(),   # (B, n, d, N)
                               _proj(t2i.v_proj, self.keys, t2i.num_heads),
                               _proj(i2t.q_proj, k, i2t.num_heads))
        self.plan = None if trainable else upscaling_plan(dec.output_upscaling)

    def __len__(self) -> int:
        return self.shape[0]

    def __call__(self, tokens: torch.Tensor, idx: slice | None = None, with_iou: bool = False):
        """Low-res logits (B, S, S) of ``tokens`` on the prepared images (``idx``: a slice of them).

        ``tokens``: (k, C) shared by every image (a concept), or (B, k, C) one prompt per prepared image.
        ``with_iou``: also return the decoder's (B,) IoU prediction for the mask.
        """
        idx = idx or slice(None)
        keys = self.keys[idx]
        b = keys.shape[0]
        tok = tokens.to(keys.device)
        tok = tok[idx] if tok.ndim == 3 else tok[None].expand(b, -1, -1)
        if tok.shape[0] != b:
            raise ValueError(f"{tok.shape[0]} prompts for {b} prepared images")
        out_tokens = torch.cat([self.dec.iou_token.weight, self.dec.mask_tokens.weight], 0)
        point = torch.cat([out_tokens[None].expand(b, -1, -1), tok], 1)
        queries = point
        for i, lay in enumerate(self.tr.layers):
            cached = tuple(c[idx] for c in self.cache0) if i == 0 and self.cache0 is not None else None
            queries, keys = self._block(lay, queries, keys, point, cached)
        # Only the first mask token's output (and the IoU token's) is used: the final attention runs for them alone.
        used = slice(0, 2) if with_iou else slice(1, 2)
        fin = self.tr.final_attn_token_to_image
        att = _tokens_to_image(fin, queries[:, used] + point[:, used], keys, self.pe)
        out = self.tr.norm_final_attn(queries[:, used] + att)
        hyper = self.dec.output_hypernetworks_mlps[0](out[:, -1])
        low = self._masks(keys, hyper)
        if not with_iou:
            return low
        return low, self.dec.iou_prediction_head(out[:, 0])[:, 0]

    def _masks(self, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Upscale the image tokens channels-last and dot with ``hyper``, a few hundred pixels at a time."""
        _, _, h, w = self.shape
        b = keys.shape[0]
        ops, weights = self.plan or upscaling_plan(self.dec.output_upscaling, detach=False)
        if torch.is_grad_enabled() and self.plan is not None:     # frozen weights: hand-written chunk backward
            lo = _FrozenPixels.apply(keys, hyper, ops, weights)
        elif torch.is_grad_enabled():
            lo = _PixelChunks.apply(keys, hyper, lambda x, hy, *ws: _pixels(ops, ws, x, hy), PIXEL_CHUNK, *weights)
        else:
            lo = torch.stack([torch.cat([_pixels(ops, weights, x[i:i + PIXEL_CHUNK], hy)
                                         for i in range(0, x.shape[0], PIXEL_CHUNK)]) for x, hy in zip(keys, hyper)])
        offsets = [(op[1], op[2]) for op in ops if op[0] == "conv"]
        n = len(offsets)
        lo = lo.reshape(b, h, w, *(k for o in offsets for k in o))            # axes: b, h, w, kh1, kw1, ..., khn, kwn
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
        kpe = (keys + self.pe).detach() if cached is None else None     # values only: gradients reach keys directly
        if cached is None:
            att = _tokens_to_image(t2i, q, keys, self.pe, kpe)
        else:
            att = _attend(t2i, _proj(t2i.q_proj, q, t2i.num_heads), cached[0], cached[1], k_t=True)
        queries = lay.norm2(queries + att)
        queries = lay.norm3(queries + lay.mlp(queries))
        q = queries + qpe
        keys = _image_to_tokens(i2t, kpe, q, queries, None if cached is None else cached[2], residual=keys)
        return queries, lay.norm4(keys)


PIXEL_CHUNK = 512     # image tokens per step of the upscaling: its intermediates then stay in the CPU's cache


def _pixels(ops, weights, x: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
    """(P, C) image tokens of one image and its (c,) ``hyper`` -> (P, sub-pixels) low-res logits."""
    for op in ops:
        if op[0] == "conv":
            _, kh, kw, iw, ib = op
            x = (x @ weights[iw]).unflatten(-1, (kh * kw, -1)) + weights[ib]     # sub-pixel offsets as an extra axis
        elif op[0] == "norm":
            _, eps, iw, ib = op
            x = F.layer_norm(x, (x.shape[-1],), weights[iw], weights[ib], eps)
        else:
            x = op[1](x)
    return (x.reshape(-1, x.shape[-1]) @ hyper).reshape(len(x), -1)


class _PixelChunks(torch.autograd.Function):
    """``fn(x[b, i:i+chunk], hyper[b], *weights)`` over images and cache-sized pixel chunks, each its own graph.

    The upscaled intermediates are 16x larger than the image tokens; computing and differentiating them one
    chunk at a time, instead of as whole tensors, keeps each step's data in the CPU's cache. Gradients reach
    ``x``, ``hyper`` and any of ``weights`` that require them (summed over chunks).
    """

    @staticmethod
    def forward(ctx, x, hyper, fn, chunk, *weights):
        ctx.parts, out = [], None
        need = ctx.needs_input_grad
        ws = [w.detach().requires_grad_(need[4 + j]) for j, w in enumerate(weights)]
        ctx.ws = ws
        for b in range(x.shape[0]):
            for i in range(0, x.shape[1], chunk):
                with torch.enable_grad():
                    xi = x[b, i:i + chunk].detach().requires_grad_(need[0])
                    hi = hyper[b].detach().requires_grad_(need[1])
                    lo = fn(xi, hi, *ws)
                if out is None:
                    out = lo.new_empty((x.shape[0], x.shape[1], lo.shape[-1]))
                out[b, i:i + chunk] = lo.detach()
                if lo.requires_grad:
                    ctx.parts.append((b, i, xi, hi, lo))
        ctx.x_shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        need = ctx.needs_input_grad
        gx = grad.new_empty(ctx.x_shape) if need[0] else None
        gh = None
        gw = [torch.zeros_like(w) if w.requires_grad else None for w in ctx.ws]
        train_w = [w for w in ctx.ws if w.requires_grad]
        for b, i, xi, hi, lo in ctx.parts:
            wrt = [t for t in (xi, hi) if t.requires_grad] + train_w
            grads = list(torch.autograd.grad(lo, wrt, grad[b, i:i + lo.shape[0]]))
            if xi.requires_grad:
                gx[b, i:i + lo.shape[0]] = grads.pop(0)
            if hi.requires_grad:
                if gh is None:
                    gh = grad.new_zeros((ctx.x_shape[0], hi.shape[-1]))
                gh[b] += grads.pop(0)
            for j, w in enumerate(ctx.ws):
                if w.requires_grad:
                    gw[j] += grads.pop(0)
        ctx.parts, ctx.ws = [], []
        return (gx, gh, None, None, *gw)


class _FrozenPixels(torch.autograd.Function):
    """``_pixels`` over cache-sized chunks with constant weights; backward written out per op (no graph per chunk).

    Forward keeps, per chunk, what each op's backward needs (a norm's input and statistics, an activation's
    input, the last activation for the dot with ``hyper``); backward runs the ops in reverse with ATen's own
    backward kernels. Gradients reach the image tokens and ``hyper`` (same values as autograd through
    ``_pixels``, tested).
    """

    @staticmethod
    def forward(ctx, x, hyper, ops, weights):
        b, p, _ = x.shape
        ctx.ops, ctx.weights, ctx.saved, out = ops, weights, [], None
        for bi in range(b):
            for i in range(0, p, PIXEL_CHUNK):
                lo, saved = _pixels_saving(ops, weights, x[bi, i:i + PIXEL_CHUNK], hyper[bi])
                if out is None:
                    out = lo.new_empty((b, p, lo.shape[-1]))
                out[bi, i:i + PIXEL_CHUNK] = lo
                ctx.saved.append(saved)
        ctx.save_for_backward(hyper)
        return out

    @staticmethod
    def backward(ctx, grad):
        (hyper,) = ctx.saved_tensors
        b, p, _ = grad.shape
        gx = grad.new_empty((b, p, _first_cin(ctx.ops, ctx.weights))) if ctx.needs_input_grad[0] else None
        gh = torch.zeros_like(hyper) if ctx.needs_input_grad[1] else None
        k = 0
        for bi in range(b):
            for i in range(0, p, PIXEL_CHUNK):
                g = grad[bi, i:i + PIXEL_CHUNK]
                dh = _pixels_backward(ctx.ops, ctx.weights, ctx.saved[k], hyper[bi], g,
                                      None if gx is None else gx[bi, i:i + len(g)])
                if gh is not None:
                    gh[bi] += dh
                k += 1
        return gx, gh, None, None


def _first_cin(ops, weights) -> int:
    return next(weights[op[3]].shape[0] for op in ops if op[0] == "conv")


def _pixels_saving(ops, weights, x: torch.Tensor, hyper: torch.Tensor):
    """``_pixels`` without autograd, returning what ``_pixels_backward`` needs."""
    saved = []
    for op in ops:
        if op[0] == "conv":
            _, kh, kw, iw, ib = op
            w = weights[iw]
            saved.append(x.shape)
            x = torch.addmm(weights[ib].repeat(kh * kw), x.reshape(-1, w.shape[0]), w)
            x = x.reshape(*saved[-1][:-1], kh * kw, -1)
        elif op[0] == "norm":
            _, eps, iw, ib = op
            out, mean, rstd = torch.native_layer_norm(x, [x.shape[-1]], weights[iw], weights[ib], eps)
            saved.append((x, mean, rstd))
            x = out
        else:
            saved.append(x)
            x = op[1](x)
    saved.append(x)
    return (x.reshape(-1, x.shape[-1]) @ hyper).reshape(len(x), -1), saved


def _pixels_backward(ops, weights, saved, hyper, grad, out: torch.Tensor | None) -> torch.Tensor:
    """d hyper of one chunk from its saved forward and ``grad`` (P, sub-pixels); d tokens written into ``out``."""
    last = saved[-1]
    flat = last.reshape(-1, last.shape[-1])
    dh = flat.t() @ grad.reshape(-1)
    if out is None:
        return dh
    g = (grad.reshape(-1, 1) * hyper).reshape(last.shape)
    for j, (op, sv) in enumerate(zip(reversed(ops), reversed(saved[:-1]))):
        if op[0] == "conv":
            w = weights[op[3]]
            if j == len(ops) - 1:                               # the first op: straight into the output rows
                torch.mm(g.reshape(-1, w.shape[1]), w.t(), out=out)
                return dh
            g = (g.reshape(-1, w.shape[1]) @ w.t()).reshape(sv)
        elif op[0] == "norm":
            x, mean, rstd = sv
            g = torch.ops.aten.native_layer_norm_backward(g, x, [x.shape[-1]], mean, rstd, weights[op[2]],
                                                          weights[op[3]], [True, False, False])[0]
        elif isinstance(op[1], nn.GELU):
            g = torch.ops.aten.gelu_backward(g, sv, approximate=op[1].approximate)
        else:                                                    # ReLU
            g = g * (sv > 0)
    out.copy_(g.reshape(out.shape))
    return dh


# The image side has N = 64 * 64 tokens and the prompt side T ~ 9, so each cross-attention below is rearranged
# to never project the N image tokens through a (C, D) matrix: the T token-side vectors are pushed through the
# weights instead (rank n * T instead of D). Same arithmetic up to float rounding; the k_proj bias of a
# token-to-image attention is dropped because softmax ignores a constant shift, and the v_proj bias passes through
# because attention weights sum to one.


def _head_weight(lin, n: int) -> torch.Tensor:
    """A projection's (D, C) weight as (n, d, C), head h owning output rows h*d:(h+1)*d (as ``_heads`` splits)."""
    return lin.weight.reshape(n, -1, lin.weight.shape[-1])


def _tokens_to_image(att, q_tokens: torch.Tensor, x: torch.Tensor, pe: torch.Tensor,
                     xpe: torch.Tensor | None = None) -> torch.Tensor:
    """SAM's Attention(q=tokens, k=x + pe, v=x) for few tokens (B, T, C) over many image tokens (B, N, C).

    ``xpe``: x + pe when the caller has it already (its values only: gradients reach ``x`` all the same).
    """
    n = att.num_heads
    b, t, _ = q_tokens.shape
    q = att.q_proj(q_tokens).reshape(b, t, n, -1)                                 # (B, T, n, d)
    d = q.shape[-1]
    qk = torch.einsum("btnd,ndc->bntc", q, _head_weight(att.k_proj, n)).reshape(b, n * t, -1)
    ax = _TokensOverImage.apply(qk / math.sqrt(d), x, pe, None if xpe is None else xpe.detach())
    ax = ax.reshape(b, n, t, -1)                                                  # (B, n, T, C)
    out = torch.einsum("bntc,ndc->btnd", ax, _head_weight(att.v_proj, n)) + att.v_proj.bias.reshape(n, d)
    return att.out_proj(out.reshape(b, t, n * d))


class _TokensOverImage(torch.autograd.Function):
    """softmax(q (x + pe)^T) x for R query rows (B, R, C) over image tokens x (B, N, C); pe (1, N, C) constant.

    Written out so that the image side is touched as little as possible: without ``xpe`` (x + pe) the positional
    term is a separate small product instead of a new (B, N, C) tensor, and backward writes the image tokens'
    gradient once, from both of their uses (keys and values) in one stacked product.
    """

    @staticmethod
    def forward(ctx, q, x, pe, xpe):
        if xpe is None:
            s = torch.baddbmm((q.reshape(-1, q.shape[-1]) @ pe[0].t()).reshape(q.shape[0], q.shape[1], -1),
                              q, x.transpose(1, 2))
        else:
            s = q @ xpe.transpose(1, 2)
        a = torch.softmax(s, dim=-1)                                              # (B, R, N)
        ctx.save_for_backward(q, x, pe, xpe, a)
        return a @ x

    @staticmethod
    def backward(ctx, g):
        q, x, pe, xpe, a = ctx.saved_tensors
        da = g @ x.transpose(1, 2)
        ds = a * (da - (a * da).sum(-1, keepdim=True))                            # softmax backward
        gq = gx = None
        if ctx.needs_input_grad[0]:
            gq = ds @ (x if xpe is None else xpe)
            if xpe is None:
                gq = gq + (ds.reshape(-1, ds.shape[-1]) @ pe[0]).reshape(gq.shape)
        if ctx.needs_input_grad[1]:
            gx = torch.cat([ds, a], 1).transpose(1, 2) @ torch.cat([q, g], 1)     # keys' and values' paths at once
        return gq, gx, None, None


def _image_to_tokens(att, xq: torch.Tensor | None, k_tokens: torch.Tensor, v_tokens: torch.Tensor,
                     q_heads: torch.Tensor | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """SAM's Attention(q=image tokens xq (B, N, C), k/v=few tokens (B, T, C)); ``q_heads``: xq already projected.

    ``residual`` (B, N, C) is added to the output in the same product. The output bias rides along in the values:
    each image token's attention weights sum to one per head, so to n over the n x T columns.
    """
    n = att.num_heads
    b, t, _ = k_tokens.shape
    k = att.k_proj(k_tokens).reshape(b, t, n, -1)                                 # (B, T, n, d)
    v = att.v_proj(v_tokens).reshape(b, t, n, -1)
    d = k.shape[-1]
    w_out = att.out_proj.weight.reshape(att.out_proj.weight.shape[0], n, d)      # (C, n, d)
    u = torch.einsum("btnd,cnd->bntc", v, w_out).reshape(b, n * t, -1) + att.out_proj.bias / n   # (B, nT, C)
    if q_heads is None:
        kq = torch.einsum("btnd,ndc->bntc", k, _head_weight(att.q_proj, n)).reshape(b, n * t, -1)
        bias = torch.einsum("btnd,nd->bnt", k, att.q_proj.bias.reshape(n, d)).reshape(b, 1, n * t)
        if residual is not None:
            return _ImageOverTokens.apply(residual, xq.detach(), kq / math.sqrt(d), bias / math.sqrt(d), u, n)
        s = (torch.baddbmm(bias, xq, kq.transpose(1, 2))).reshape(b, -1, n, t)    # (B, N, n, T)
        a = torch.softmax(s / math.sqrt(d), dim=-1)
    else:                                                                         # (B, n, N, d)
        s = q_heads @ k.permute(0, 2, 3, 1)                                       # (B, n, N, T)
        a = torch.softmax(s / math.sqrt(d), dim=-1).transpose(1, 2)
    a = a.reshape(b, -1, n * t)                                                   # (B, N, nT)
    return torch.bmm(a, u) if residual is None else torch.baddbmm(residual, a, u)


class _ImageOverTokens(torch.autograd.Function):
    """x + softmax_heads(xq kq^T + bias) u for image tokens x (B, N, C), xq = x + pe (values only), nT columns.

    Backward writes the image tokens' gradient once, for both of their uses (the residual and the queries).
    """

    @staticmethod
    def forward(ctx, x, xq, kq, bias, u, n):
        b, m, _ = x.shape
        s = torch.baddbmm(bias, xq, kq.transpose(1, 2))                          # (B, N, nT)
        a = torch.softmax(s.reshape(b, m, n, -1), dim=-1).reshape(b, m, -1)
        ctx.save_for_backward(xq, kq, u, a)
        ctx.n = n
        return torch.baddbmm(x, a, u)

    @staticmethod
    def backward(ctx, g):
        xq, kq, u, a = ctx.saved_tensors
        b, m, _ = a.shape
        gu = a.transpose(1, 2) @ g if ctx.needs_input_grad[4] else None
        da = (g @ u.transpose(1, 2)).reshape(b, m, ctx.n, -1)
        a4 = a.reshape(b, m, ctx.n, -1)
        ds = (a4 * (da - (a4 * da).sum(-1, keepdim=True))).reshape(b, m, -1)     # softmax backward
        gkq = ds.transpose(1, 2) @ xq if ctx.needs_input_grad[2] else None
        gb = ds.sum(1, keepdim=True) if ctx.needs_input_grad[3] else None
        gx = torch.baddbmm(g, ds, kq) if ctx.needs_input_grad[0] else None
        return gx, None, gkq, gb, gu, None
