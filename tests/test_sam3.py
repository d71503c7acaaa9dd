"""SAM3 concept backend on a tiny random Sam3Config: a learned concept in as text_embeds, forward and backward."""
import numpy as np
import pytest
import torch

from frozenseg.concept import FitSettings, fit_concept, hue_scores, predict_logits
from frozenseg.errors import MissingDatasetError


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
