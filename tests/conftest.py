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
