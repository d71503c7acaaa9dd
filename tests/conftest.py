"""Shared fixtures: outputs and the embedding cache go to a per-session temporary folder."""
import os

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_outputs(tmp_path_factory):
    """Point FROZENSEG_OUT and FROZENSEG_CACHE at a temporary folder for the whole test session; sweeps run serially
    (tests/test_distributed.py starts its own clusters)."""
    root = tmp_path_factory.mktemp("frozenseg")
    old = {k: os.environ.get(k) for k in ("FROZENSEG_OUT", "FROZENSEG_CACHE", "MPLBACKEND", "FROZENSEG_SCHEDULER")}
    os.environ["FROZENSEG_OUT"] = str(root / "out")
    os.environ["FROZENSEG_CACHE"] = str(root / "cache")
    os.environ["MPLBACKEND"] = "Agg"
    os.environ["FROZENSEG_SCHEDULER"] = "serial"
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def litemedsam():
    """The bundled LiteMedSAM, loaded once."""
    from frozenseg.models import load_model, set_threads

    set_threads()
    return load_model("litemedsam")


@pytest.fixture
def ellipse_image():
    """A dark ellipse on a mid-grey noisy background: (image, mask)."""
    rng = np.random.default_rng(0)
    img = (rng.random((200, 240, 3)) * 40 + 140).astype(np.uint8)
    yy, xx = np.mgrid[:200, :240]
    mask = ((yy - 95) / 45) ** 2 + ((xx - 120) / 65) ** 2 < 1
    img[mask] = 40
    return img, mask


@pytest.fixture
def native_pair(tmp_path, monkeypatch):
    """A folder domain of two 1000x800 images loaded at 512 px (caches in tmp_path): 'a' whose mask has one-pixel
    stripes that shrinking changes, 'b' without a target; returns (cases, a's full-size mask)."""
    import warnings

    from PIL import Image

    from frozenseg.data import load_folder

    monkeypatch.setenv("FROZENSEG_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "native"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    truth = np.zeros((1000, 800), bool)
    truth[200:700, 150:600] = True
    truth[100:900:7, 50:750] = True
    for name, m in (("a", truth), ("b", np.zeros_like(truth))):
        Image.fromarray(np.full((1000, 800, 3), 90, np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # 'b' has an empty mask, on purpose
        cases = load_folder(root, "mine", max_side=512)
    return cases, truth


@pytest.fixture
def dinov2_weights_dir(tmp_path, monkeypatch):
    """A tiny random DINOv2 saved where the manifest's dinov2_vits14 entry looks; the per-process extractor cleared."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    from frozenseg.localizers import features

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       patch_size=14, image_size=56)
    Dinov2Model(cfg).save_pretrained(tmp_path / "weights" / "dinov2-small")
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    monkeypatch.setenv("FROZENSEG_CACHE", str(tmp_path / "cache"))
    clear = getattr(features, "_dinov2", None)     # the per-process extractor (absent before it existed)
    clear and clear.cache_clear()
    yield tmp_path
    clear and clear.cache_clear()


@pytest.fixture
def ellipse_folder(tmp_path):
    """A user folder domain: images/ and masks/ of ten 64 x 80 PNGs, a dark ellipse on noisy grey in each."""
    from PIL import Image

    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:64, :80]
    for i in range(10):
        rng = np.random.default_rng(i)
        img = (rng.random((64, 80, 3)) * 40 + 140).astype(np.uint8)
        mask = ((yy - 26 - 2 * (i % 5)) / (12 + i % 4)) ** 2 + ((xx - 30 - 3 * i) / (16 + i % 3)) ** 2 < 1
        img[mask] = 40
        Image.fromarray(img).save(root / "images" / f"m{i:02d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"m{i:02d}.png")
    return root
