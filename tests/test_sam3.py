"""SAM3 concept backend on a tiny random Sam3Config: a learned concept in as text_embeds, forward and backward, the
feature cache, and notebook 11's study run with concept_backend="sam3" from weights saved under FROZENSEG_DATA."""
import numpy as np
import pytest
import torch

from frozenseg.concept import FitSettings, fit_concept, hue_scores, predict_logits
from frozenseg.errors import ConfigError, MissingDatasetError


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are microseconds: one torch thread avoids the threads' hand-off (4x faster, loaded CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sam3():
    from frozenseg.models.sam3 import Sam3Concept

    return Sam3Concept.tiny(seed=0)


def _images(n=2, size=40):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = (rng.random((size, size + 4, 3)) * 60 + 120).astype(np.uint8)
        yy, xx = np.mgrid[:size, : size + 4]
        m = ((yy - 18 - i) / 9) ** 2 + ((xx - 20) / 11) ** 2 < 1
        img[m] = 30
        out.append((img, m))
    return out


def test_forward_backward_reaches_the_concept_only(sam3):
    feats = sam3.features([im for im, _ in _images()])
    p = torch.zeros(3, sam3.dim, requires_grad=True)
    lo = sam3.logits(feats, p)
    assert lo.shape[0] == 2 and lo.ndim == 3
    lo.sigmoid().mean().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(q.grad is None for q in sam3.model.parameters())


def test_learned_concept_through_sam3(sam3):
    data = _images()
    feats = sam3.features([im for im, _ in data])
    before = {k: v.clone() for k, v in sam3.model.state_dict().items()}
    c = fit_concept(sam3, feats, [m for _, m in data], FitSettings(k=2, epochs=4, lr=0.05), seed=0)
    assert c.tokens.shape == (2, sam3.dim) and np.isfinite(c.losses).all()
    assert c.losses[-1] < c.losses[0]
    assert all(torch.equal(v, sam3.model.state_dict()[k]) for k, v in before.items())
    lg = predict_logits(sam3, c, feats)
    assert lg[0].shape == data[0][1].shape
    h = hue_scores(sam3, feats, lg)
    assert all(0 <= x.u <= 2 + 1e-9 for x in h)


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    from frozenseg.models.sam3 import Sam3Concept

    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    with pytest.raises(MissingDatasetError, match="sam3"):
        Sam3Concept.from_pretrained()


# ---------------------------------------------------------------- weights on disk, the feature cache, the study


@pytest.fixture
def sam3_data(tmp_path, monkeypatch):
    """A tiny random SAM3 written with save_pretrained to <FROZENSEG_DATA>/weights/sam3 (the manifest's target)."""
    from transformers import Sam3Model

    from frozenseg.models.sam3 import tiny_config

    torch.manual_seed(0)
    Sam3Model(tiny_config(56)).save_pretrained(tmp_path / "weights" / "sam3")
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    return tmp_path


def test_features_are_cached_on_disk_by_weights_preprocessing_and_image(sam3_data, tmp_path, monkeypatch):
    from transformers import Sam3Model

    from frozenseg.cache import EmbeddingCache
    from frozenseg.models import load_concept_model
    from frozenseg.models.sam3 import Sam3Concept

    cache = EmbeddingCache(tmp_path / "cache")
    be = load_concept_model("sam3", cache=cache, device="cpu")
    images = [im for im, _ in _images()]
    cold = be.features(images)
    files = sorted((cache.root / be.cache_id).rglob("*.npz"))
    assert len(files) == 2 and cache.misses == 2 and be.cache_id.startswith("sam3-")
    assert not list((cache.root / be.cache_id).rglob(".*")), "written atomically (no temporary file left)"
    with monkeypatch.context() as m:
        m.setattr(Sam3Model, "get_vision_features", lambda *a, **k: pytest.fail("cached: must not re-encode"))
        warm = load_concept_model("sam3", cache=cache).features(images)
    assert cache.hits == 2
    for a, b in zip(cold, warm):
        assert all(torch.equal(x, y) for x, y in zip(a.fpn + a.pos, b.fpn + b.pos))
        assert a.original_size == b.original_size
    tok = torch.randn(2, be.dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(be.logits(cold, tok), be.logits(warm, tok)), "cold and warm runs give the same logits"
    assert Sam3Concept(be.model, 42, weights_id=be.weights_id).cache_id != be.cache_id, "preprocessing is in the key"
    assert Sam3Concept.tiny(seed=1).cache_id != Sam3Concept.tiny(seed=0).cache_id, "so are the weights"
    files[0].write_bytes(b"truncated")
    again = be.features(images)                          # an unreadable entry is a miss, encoded again
    assert cache.misses == 3 and all(torch.equal(x, y) for a, b in zip(again, cold) for x, y in zip(a.fpn, b.fpn))


def test_concept_study_runs_through_sam3_end_to_end(sam3_data, monkeypatch):
    """notebook 11 with concept_backend="sam3": the same run_concept_study as the default, tiny SAM3, smoke sizes."""
    from frozenseg.concept import loop
    from frozenseg.experiments.concept_search import concept_params, gallery_panels, run_concept_study, study_model
    from frozenseg.models.sam3 import Sam3Concept
    from frozenseg.study import setup

    fits = []
    real_fit = loop.fit_concept
    monkeypatch.setattr(loop, "fit_concept", lambda be, *a, **k: fits.append((be, a[2])) or real_fit(be, *a, **k))
    study = setup(profile="smoke", domains=["isic", "spleen"], model=study_model("sam3"), verbose=False)
    assert study.model_key == "sam3" and "SAM3" in study.model_label
    df, times, concepts = run_concept_study(study, concept_backend="sam3")
    prof = study.profile.concept
    assert set(df.domain) == {"isic", "spleen"} and set(df.model) == {"sam3"} and set(df.concept_backend) == {"sam3"}
    assert {"pool", "test", "test_lowest_u"} <= set(df.split) and df.dice.between(0, 1).all()
    assert "volume" in set(df.unit), "spleen is scored per volume, as with the decoder backend"
    assert len(concepts) == 2 * 2 * len(prof["starts"])
    assert all(v.shape == (prof["k"], 32) for v in concepts.values())
    assert all(isinstance(be, Sam3Concept) for be, _ in fits)
    assert {(s.lr, s.lr_min) for _, s in fits} == {(5e-4, 5e-6)}, "SAM3 fits with the source's preset"
    assert {s.epochs for _, s in fits} == {prof["epochs"], prof["refit_epochs"]}, "the profile's sizes still win"
    assert concept_params(study.profile, "sam3")["lr"] == 5e-4
    feats = list((study.cache.root).glob("sam3-*/*/*.npz"))
    assert len(feats) >= 2 * (prof["pool"] + 1), "pool and test features cached on disk"
    panels = gallery_panels(study, df, concepts, n=1)                 # the backend is read from the results
    assert len(panels) == 4 and all(p[0][1].shape == p[0][0].mask.shape for p in panels.values())


def test_missing_sam3_weights_fail_before_any_work(tmp_path, monkeypatch):
    from frozenseg.experiments.concept_search import run_concept_study
    from frozenseg.study import setup

    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    study = setup(profile="smoke", domains=["isic"], model="sam3", verbose=False)
    with pytest.raises(MissingDatasetError) as err:
        run_concept_study(study, concept_backend="sam3")
    msg = str(err.value)
    assert "'sam3'" in msg and "weights/sam3" in msg and "FROZENSEG_DATA" in msg and "huggingface-cli download" in msg
    assert study._data == {}, "no data was loaded (and nothing encoded) before the error"


def test_backend_names_and_presets_are_checked():
    from frozenseg.experiments.concept_search import concept_params, run_concept_study, study_model
    from frozenseg.config import get_profile
    from frozenseg.models import load_model

    smoke = get_profile("smoke")
    with pytest.raises(ConfigError, match="decoder.*sam3"):
        run_concept_study(None, concept_backend="sam2")
    with pytest.raises(ConfigError, match="leave model=None"):
        study_model("sam3", "litemedsam")
    assert study_model("decoder", None) is None and study_model("decoder", "medsam") == "medsam"
    with pytest.raises(ConfigError, match="concept_backend='sam3'"):
        load_model("sam3")
    dec, s3 = concept_params(smoke), concept_params(smoke, "sam3")
    assert (dec["lr"], dec["lr_min"]) == (0.1, 1e-3) and (s3["lr"], s3["lr_min"]) == (5e-4, 5e-6)
    assert dec["epochs"] == s3["epochs"] == smoke.concept["epochs"]
    mine = get_profile("smoke", concept={**smoke.concept, "lr": 0.02})
    assert concept_params(mine, "sam3")["lr"] == 0.02, "a profile's explicit lr wins over the backend's preset"


def test_sam3_is_loaded_on_the_study_device(sam3_data, monkeypatch):
    """FROZENSEG_DEVICE (models.default_device) places SAM3 however it is loaded; 'meta' stands in for a GPU here."""
    from frozenseg.models import load_concept_model
    from frozenseg.models.sam3 import Sam3Concept

    monkeypatch.setenv("FROZENSEG_DEVICE", "meta")
    for be in (Sam3Concept.from_pretrained(), load_concept_model("sam3")):
        assert {p.device.type for p in be.model.parameters()} == {"meta"} and be.device.type == "meta"
        assert be.cache_id.endswith("-meta-float32"), "its cached features are keyed by the device too"
