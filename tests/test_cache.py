"""Embedding cache: one encode per image and model, atomic writes, corrupt entries recovered."""
import numpy as np
import pytest

from frozenseg.cache import EmbeddingCache, image_hash
from frozenseg.models.base import Embedding


class CountingModel:
    """A stand-in model that counts encodes (the cache only needs cache_id, key and encode)."""

    key = "counting"
    cache_id = "counting-v1-test"

    def __init__(self):
        self.calls = 0

    def encode(self, image):
        self.calls += 1
        return Embedding(features=np.full((4, 2, 2), image.mean(), np.float32),
                         original_size=image.shape[:2], input_size=image.shape[:2])


def _img(v=1):
    return np.full((8, 6, 3), v, np.uint8)


def test_each_image_is_encoded_once(tmp_path):
    cache, model = EmbeddingCache(tmp_path), CountingModel()
    a = cache.get(model, _img(1))
    b = EmbeddingCache(tmp_path).get(model, _img(1))          # a new process sees the same file
    assert model.calls == 1 and np.array_equal(a.features, b.features)
    assert b.original_size == (8, 6) and b.input_size == (8, 6)
    cache.get_many(model, [_img(1), _img(2), _img(2)], progress=False)
    assert model.calls == 2


def test_key_depends_on_content_model_and_preprocessing(tmp_path):
    cache, model = EmbeddingCache(tmp_path), CountingModel()
    other = CountingModel()
    other.cache_id = "counting-v1-otherpreproc"
    assert cache.path(model, _img(1)) != cache.path(model, _img(2))
    assert cache.path(model, _img(1)) != cache.path(other, _img(1))
    assert image_hash(_img(1)) != image_hash(_img(1).reshape(6, 8, 3))


def test_corrupt_or_truncated_entry_is_recomputed(tmp_path, caplog):
    cache, model = EmbeddingCache(tmp_path), CountingModel()
    path = cache.path(model, _img(3))
    cache.get(model, _img(3))
    path.write_bytes(path.read_bytes()[:50])                  # a truncated file, e.g. from a killed copy
    emb = cache.get(model, _img(3))
    assert model.calls == 2 and emb.features.shape == (4, 2, 2)
    assert "unreadable" in caplog.text and str(path) in caplog.text


def test_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    cache, model = EmbeddingCache(tmp_path), CountingModel()

    def boom(fh, **kw):
        fh.write(b"half an array")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.get(model, _img(4))
    monkeypatch.undo()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [], f"half-written files left: {files}"
    cache.get(model, _img(4))
    assert model.calls == 2


def test_atomic_writes_get_ordinary_file_permissions(tmp_path):
    """Results, caches and the report get the mode a plain write gives (not mkstemp's 0600)."""
    import os

    from frozenseg.io import write_text_atomic

    umask = os.umask(0o022)
    try:
        atomic = write_text_atomic(tmp_path / "atomic.json", "{}")
        plain = tmp_path / "plain.json"
        plain.write_text("{}")
    finally:
        os.umask(umask)
    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o644


def test_real_model_embeddings_round_trip(tmp_path, litemedsam, ellipse_image):
    """The cached LiteMedSAM embedding decodes to exactly the mask of the fresh one."""
    img, _ = ellipse_image
    cache = EmbeddingCache(tmp_path)
    fresh = cache.get(litemedsam, img)
    cached = EmbeddingCache(tmp_path).get(litemedsam, img)
    box = np.array([50.0, 45.0, 190.0, 145.0])
    assert np.array_equal(litemedsam.decode(fresh, boxes=box).logits, litemedsam.decode(cached, boxes=box).logits)


def test_mask_cache_returns_identical_masks_cold_and_warm(tmp_path, litemedsam, ellipse_image):
    from frozenseg.cache import MaskCache

    img, mask = ellipse_image
    emb = litemedsam.encode(img)
    boxes = np.array([[50.0, 45.0, 190.0, 145.0], [30.0, 30.0, 210.0, 170.0]])
    cache = MaskCache(tmp_path)
    cold_masks, cold_iou = cache.decode_boxes(litemedsam, img, emb, boxes)
    fresh = litemedsam.decode(emb, boxes=boxes)
    assert np.array_equal(cold_masks, fresh.masks) and np.allclose(cold_iou, fresh.iou)
    warm = MaskCache(tmp_path)
    warm_masks, warm_iou = warm.decode_boxes(litemedsam, img, emb, boxes)
    assert warm.hits == 1 and warm.misses == 0
    assert np.array_equal(warm_masks, cold_masks) and np.array_equal(warm_iou, cold_iou)
    assert cache.path(litemedsam, img, boxes, False) != cache.path(litemedsam, img, boxes[:1], False)
    path = cache.path(litemedsam, img, boxes, False)
    path.write_bytes(b"garbage")
    again, _ = MaskCache(tmp_path).decode_boxes(litemedsam, img, emb, boxes)
    assert np.array_equal(again, cold_masks)


def test_key_depends_on_the_device_and_dtype_the_encoder_runs_in(tmp_path):
    """A GPU's embeddings never mix with the CPU's: the key names the encoder's device type and dtype ('meta' stands
    in for a GPU on a machine without one; the key reads the parameters, wherever they were moved)."""
    import torch

    from frozenseg.models.base import state_dict_hash
    from frozenseg.models.sam import SamCheckpoint
    from test_models import _tiny_sam

    def model():
        sam = _tiny_sam()
        return SamCheckpoint(sam, weights_id=state_dict_hash(sam), key="sam_tiny")

    cache, img = EmbeddingCache(tmp_path), _img(1)
    cpu = model()
    assert cache.path(cpu, img) == cache.path(model(), img), "same weights, device and dtype: one entry"
    assert cpu.cache_id.endswith("-cpu-float32")
    moved = model().to("meta")
    assert moved.cache_id.endswith("-meta-float32") and cache.path(moved, img) != cache.path(cpu, img)
    half = model()
    half.image_encoder.to(torch.bfloat16)
    assert half.cache_id.endswith("-cpu-bfloat16") and cache.path(half, img) != cache.path(cpu, img)
