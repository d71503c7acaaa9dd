"""Encoder engines: OpenVINO agrees with eager PyTorch (embeddings and decoded masks), so both share one cache key;
the export is cached on disk; ``auto`` falls back to PyTorch with a reason; bad settings raise clear errors."""
import numpy as np
import pytest

from frozenseg.boxes import mask_to_box
from frozenseg.errors import ConfigError
from frozenseg.evaluation.metrics import dice
from frozenseg.models import engine

pytestmark = pytest.mark.skipif(engine.openvino_version() is None, reason="OpenVINO is not installed")


@pytest.fixture
def phantom_cases():
    """One 256-px phantom case per 2D domain plus a CT slice through the organ."""
    from frozenseg.data.phantoms import make_phantom_case, make_phantom_volume

    vol = make_phantom_volume(0, 128, 12, 0)
    ct = vol.slice_case(vol.foreground_slices()[len(vol.foreground_slices()) // 2])
    return [make_phantom_case(d, 20_000 + i, 256, 0) for i, d in enumerate(("isic", "kvasir", "cxr"))] + [ct]


@pytest.fixture
def engines(litemedsam):
    """Yield a function that switches the shared model's engine; restore the default afterwards."""
    yield litemedsam.select_encoder
    litemedsam.select_encoder()


def test_openvino_embeddings_and_masks_match_pytorch(litemedsam, engines, phantom_cases):
    embs = {}
    for name in ("torch", "openvino"):
        assert engines(name) == name
        embs[name] = [litemedsam.encode(c.image) for c in phantom_cases]
    for case, e_t, e_o in zip(phantom_cases, embs["torch"], embs["openvino"]):
        assert e_t.features.shape == e_o.features.shape == (256, 64, 64)
        assert np.abs(e_t.features - e_o.features).max() <= engine.PARITY_TOL, case.case_id
        box = mask_to_box(case.mask)[None]
        m_t, m_o = (litemedsam.decode(e, boxes=box).masks[0] for e in (e_t, e_o))
        assert dice(m_t, m_o) >= 0.999, case.case_id


def test_cache_key_does_not_depend_on_the_engine(litemedsam, engines, phantom_cases, tmp_path):
    from frozenseg.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path)
    img = phantom_cases[0].image
    engines("torch")
    written = cache.get(litemedsam, img)
    path = cache.path(litemedsam, img)
    engines("openvino")
    assert cache.path(litemedsam, img) == path
    assert np.array_equal(cache.get(litemedsam, img).features, written.features)   # read, not re-encoded
    assert cache.hits == 1 and cache.misses == 1


def test_export_is_cached_on_disk_and_reused(litemedsam, monkeypatch):
    import openvino as ov

    xml = engine.export_ir(litemedsam.image_encoder, litemedsam.cache_id, 256)   # the session's export, or made now
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert xml.parent.parent == engine.export_dir()
    assert not list(engine.export_dir().glob(".*")), "no temporary export folder left behind"

    def boom(*a, **k):
        raise AssertionError("the cached IR should be reused, not exported again")

    monkeypatch.setattr(ov, "convert_model", boom)
    assert engine.export_ir(litemedsam.image_encoder, litemedsam.cache_id, 256) == xml
    assert engines_build_ok(litemedsam)
    other = engine.ir_key("litemedsam-otherweights-pre", 256)
    assert other != xml.parent.name, "other weights get their own IR"


def engines_build_ok(model) -> bool:
    """A compiled encoder from the cached IR encodes a blank image."""
    enc = engine.OpenVINOEncoder.build(model.image_encoder, model.cache_id, model.input_frame)
    import torch

    return tuple(enc(torch.zeros(1, 3, 256, 256)).shape) == (1, 256, 64, 64)


def test_auto_falls_back_to_pytorch_with_the_reason(litemedsam, engines, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("exporter unavailable")

    monkeypatch.setattr(engine, "export_ir", broken)
    with pytest.warns(UserWarning, match="exporter unavailable"):
        assert engines("auto") == "torch"
    assert "exporter unavailable" in litemedsam.encoder_note
    assert litemedsam.encode(np.full((64, 64, 3), 100, np.uint8)).features.shape == (256, 64, 64)
    with pytest.raises(RuntimeError, match="exporter unavailable"):
        engines("openvino")                                   # asked for explicitly: no silent fallback


def test_engine_settings_are_checked(litemedsam, engines, monkeypatch):
    monkeypatch.setenv(engine.ENV, "tensorrt")
    with pytest.raises(ConfigError, match="FROZENSEG_ENCODER"):
        engine.requested_engine()
    monkeypatch.setenv(engine.ENV, "torch")
    assert engine.planned_engine("cpu") == "torch" and engines() == "torch"
    monkeypatch.setenv(engine.ENV, "auto")
    assert engine.planned_engine("cpu") == "openvino" and engine.planned_engine("cuda") == "torch"
    with pytest.raises(ConfigError, match="unknown encoder engine"):
        engines("onnx")


def test_environment_line_names_the_engine(monkeypatch):
    from frozenseg.repro import environment_line

    monkeypatch.setenv(engine.ENV, "torch")
    assert "encoder eager torch" in environment_line("smoke", "phantom", "litemedsam", [0])
    monkeypatch.setenv(engine.ENV, "auto")
    assert "encoder openvino" in environment_line("smoke", "phantom", "litemedsam", [0])


def test_environment_line_tells_the_device_that_runs(monkeypatch):
    """FROZENSEG_DEVICE=cpu with a GPU visible: the models run on the CPU, and the line says so."""
    import torch

    from frozenseg.repro import environment_line

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Test GPU")
    monkeypatch.setenv(engine.ENV, "auto")
    monkeypatch.setenv("FROZENSEG_DEVICE", "cpu")
    line = environment_line("smoke", "phantom", "litemedsam", [0])
    assert f"device cpu x{torch.get_num_threads()} |" in line and "cuda" not in line and "Test GPU" not in line
    monkeypatch.delenv("FROZENSEG_DEVICE")
    line = environment_line("smoke", "phantom", "litemedsam", [0])
    assert "device cuda:Test GPU |" in line and "encoder eager torch" in line


def test_tiny_sam_through_openvino_matches_pytorch(ellipse_image):
    """The same engine code on a segment-anything model (a tiny random ViT config)."""
    from frozenseg.models.base import state_dict_hash
    from frozenseg.models.sam import SamCheckpoint
    from test_models import _tiny_sam

    sam = _tiny_sam()
    model = SamCheckpoint(sam, weights_id=state_dict_hash(sam), key="sam_tiny")
    img, mask = ellipse_image
    assert model.select_encoder("torch") == "torch"
    ref = model.encode(img).features
    assert model.select_encoder("openvino") == "openvino"
    assert np.abs(model.encode(img).features - ref).max() <= engine.PARITY_TOL
