"""Procedural phantoms: determinism, shapes, masks, and each domain's failure modes."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from frozenseg.config import get_profile
from frozenseg.data import phantoms as P
from frozenseg.data.phantoms import make_phantom_case, make_phantom_volume, phantom_domain
from frozenseg.data.types import Case, DomainData, Volume
from frozenseg.errors import ConfigError

DOMAINS_2D = ("isic", "kvasir", "cxr")
AREA = {"isic": (0.02, 0.6), "kvasir": (0.01, 0.4), "cxr": (0.08, 0.5)}


@pytest.mark.parametrize("domain", DOMAINS_2D)
def test_case_deterministic(domain):
    """Same (seed, index) gives byte-identical arrays; another seed or index differs."""
    a, b = make_phantom_case(domain, 3, 96, 11), make_phantom_case(domain, 3, 96, 11)
    assert a.image.tobytes() == b.image.tobytes() and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, make_phantom_case(domain, 3, 96, 12).image)
    assert not np.array_equal(a.image, make_phantom_case(domain, 4, 96, 11).image)


@pytest.mark.parametrize("domain", DOMAINS_2D)
@pytest.mark.parametrize("size", [64, 128])
def test_case_shapes_and_masks(domain, size):
    """Images are (S, S, 3) uint8, masks (S, S) bool with a plausible foreground fraction."""
    lo, hi = AREA[domain]
    for i in range(6):
        c = make_phantom_case(domain, i, size, 0)
        assert isinstance(c, Case) and c.source == "phantom" and c.domain == domain
        assert c.case_id == f"{domain}_p{i:05d}"
        assert c.image.shape == (size, size, 3) and c.image.dtype == np.uint8
        assert c.mask.shape == (size, size) and c.mask.dtype == bool
        assert lo < c.mask.mean() < hi, (domain, i, c.mask.mean())
        assert c.image.std() > 5                                     # not a flat image


@pytest.mark.parametrize("domain", DOMAINS_2D)
def test_foreground_differs_but_not_trivially(domain):
    """Foreground and background differ in mean but overlap in intensity (not a threshold task)."""
    c = make_phantom_case(domain, 1, 128, 0)
    grey = c.image.astype(float).mean(axis=2)
    fg, bg = grey[c.mask], grey[~c.mask]
    assert abs(fg.mean() - bg.mean()) > 5
    assert fg.max() > np.percentile(bg, 25) and fg.min() < np.percentile(bg, 75)


def test_isic_failure_modes_present():
    """Across cases: hair, faint borders and multi-lobed lesions all occur."""
    metas = [make_phantom_case("isic", i, 64, 0).meta for i in range(30)]
    assert any(m["hairs"] > 0 for m in metas)
    assert any(m["faint_border"] for m in metas) and not all(m["faint_border"] for m in metas)
    assert any(m["lobes"] > 1 for m in metas)


def test_kvasir_circular_fov():
    """Corners lie outside the circular field of view (near black); the mask stays inside it."""
    for i in range(5):
        c = make_phantom_case("kvasir", i, 128, 0)
        assert c.image[:4, :4].max() < 20 and c.image[-4:, -4:].max() < 20
        assert not c.mask[:8, :8].any()


def test_cxr_grey_and_letterbox():
    """CXR is grey; some films are letterboxed with near-black bars outside the content box."""
    cases = [make_phantom_case("cxr", i, 64, 0) for i in range(40)]
    for c in cases:
        assert np.array_equal(c.image[..., 0], c.image[..., 1]) and np.array_equal(c.image[..., 0], c.image[..., 2])
    boxed = [c for c in cases if c.meta["letterbox"]]
    assert 4 <= len(boxed) <= 22
    for c in boxed:
        y0, y1, x0, x1 = c.meta["content_box"]
        bar = np.ones(c.mask.shape, bool)
        bar[y0:y1, x0:x1] = False
        assert bar.mean() > 0.1
        assert c.image[..., 0][bar].mean() < 12 and np.percentile(c.image[..., 0][bar], 95) < 25
        assert not c.mask[bar].any()
        assert c.image[..., 0][~bar].mean() > 60
    for c in cases:
        if not c.meta["letterbox"]:
            assert c.meta["content_box"] == [0, 64, 0, 64]


def test_cxr_two_lungs():
    """The lung mask has two large components, left and right of the midline."""
    c = make_phantom_case("cxr", 2, 128, 0)
    lab, n = ndi.label(c.mask)
    sizes = np.bincount(lab.ravel())[1:]
    big = np.flatnonzero(sizes > 0.2 * sizes.max()) + 1
    assert len(big) == 2
    cols = sorted(np.nonzero(lab == k)[1].mean() for k in big)
    assert cols[0] < 64 < cols[1]


def test_volume_shapes_and_determinism():
    """Volumes are (H, W, D) uint8 + bool, deterministic by seed, with spacing and id."""
    v = make_phantom_volume(7, 96, 12, 3)
    assert isinstance(v, Volume) and v.volume_id == "spleen_p007" and v.source == "phantom"
    assert v.image.shape == (96, 96, 12) and v.image.dtype == np.uint8
    assert v.mask.shape == (96, 96, 12) and v.mask.dtype == bool
    assert len(v.spacing) == 3 and all(s > 0 for s in v.spacing)
    w = make_phantom_volume(7, 96, 12, 3)
    assert v.image.tobytes() == w.image.tobytes() and np.array_equal(v.mask, w.mask)
    assert not np.array_equal(v.image, make_phantom_volume(7, 96, 12, 4).image)


@pytest.mark.parametrize("index", range(4))
def test_spleen_tips_and_empty_ends(index):
    """Empty slices at both ends; first and last spleen slices much smaller than the widest."""
    v = make_phantom_volume(index, 128, 16, 0)
    fg = v.foreground_slices()
    assert fg and fg[0] >= 1 and fg[-1] <= 16 - 2
    area = v.mask.sum(axis=(0, 1))
    assert len(fg) >= 4 and fg == list(range(fg[0], fg[-1] + 1))
    assert area[fg[0]] < 0.35 * area.max() and area[fg[-1]] < 0.35 * area.max()


@pytest.mark.parametrize("index", range(3))
def test_spleen_isodense_with_liver(index):
    """Mean spleen intensity lies within 10 grey levels of the liver's."""
    img, spleen, liver, _ = P._spleen_arrays(P._rng("spleen", index, 0), 128, 16)
    s_in, l_in = ndi.binary_erosion(spleen, iterations=1), ndi.binary_erosion(liver, iterations=2)
    assert s_in.sum() > 50 and l_in.sum() > 500
    assert abs(float(img[s_in].mean()) - float(img[l_in].mean())) < 10


def test_liver_touches_spleen_in_some_volumes():
    """In touching volumes, some slice has liver and spleen 1 pixel apart (isodense neighbours)."""
    found = False
    for index in range(6):
        img, spleen, liver, meta = P._spleen_arrays(P._rng("spleen", index, 0), 128, 16)
        if meta["liver_touches_spleen"]:
            near = ndi.binary_dilation(spleen, iterations=2) & liver
            found |= bool(near.any())
    assert found


def test_smoke_profile_domains():
    """phantom_domain gives profile-sized, disjoint train/test splits with failure-mode notes."""
    prof = get_profile("smoke")
    for d in DOMAINS_2D:
        dd = phantom_domain(d, prof)
        assert isinstance(dd, DomainData) and dd.source == "phantom"
        assert len(dd.train) == prof.n_train and len(dd.test) == prof.n_test
        assert not {c.case_id for c in dd.train} & {c.case_id for c in dd.test}
        assert dd.meta["failure_modes"]
        assert dd.train[0].image.shape == (prof.phantom_size, prof.phantom_size, 3)
    cxr = phantom_domain("cxr", prof)
    assert cxr.meta["letterboxed"] == [c.case_id for c in cxr.train + cxr.test if c.meta["letterbox"]]


def test_test_split_fixed_by_data_seed():
    """The test indices depend on data_seed; a case is identical wherever it is generated."""
    prof = get_profile("smoke")
    a, b = phantom_domain("isic", prof), phantom_domain("isic", prof)
    assert [c.case_id for c in a.test] == [c.case_id for c in b.test]
    other = phantom_domain("isic", get_profile("smoke", data_seed=5))
    assert [c.case_id for c in a.test] != [c.case_id for c in other.test]
    c7 = next(c for c in a.train + a.test if c.meta["index"] == 7)
    assert np.array_equal(c7.image, make_phantom_case("isic", 7, prof.phantom_size, prof.data_seed).image)


def test_spleen_domain():
    """Spleen: train/test slices come from disjoint volumes; test volumes are kept for 3D scoring."""
    prof = get_profile("smoke")
    dd = phantom_domain("spleen", prof)
    assert len(dd.volumes) == prof.spleen_test_volumes
    assert len(dd.meta["train_volumes"]) == prof.spleen_train_volumes
    train_vols, test_vols = {c.volume_id for c in dd.train}, {c.volume_id for c in dd.test}
    assert not train_vols & test_vols and test_vols == set(dd.volumes)
    assert all(c.mask.any() for c in dd.train), "the labelled train pool is the organ-containing slices"
    depth = {v: vol.image.shape[2] for v, vol in dd.volumes.items()}
    assert len(dd.test) == sum(depth.values()), "every slice of each test volume is a test unit"
    assert any(not c.mask.any() for c in dd.test), "spleen-free slices are test units too"
    n_fg = sum(len(v.foreground_slices()) for v in dd.volumes.values())
    assert sum(c.mask.any() for c in dd.test) == n_fg
    assert dd.meta["failure_modes"]


def test_bad_arguments():
    """Unknown domains and volume domains in the 2D maker raise ConfigError."""
    with pytest.raises(ConfigError):
        make_phantom_case("retina", 0, 64, 0)
    with pytest.raises(ConfigError):
        make_phantom_case("spleen", 0, 64, 0)
    with pytest.raises(ConfigError):
        phantom_domain("retina", get_profile("smoke"))


def _best_time(fn, n=3) -> float:
    """Fastest of ``n`` calls in process CPU seconds (robust to other processes' load)."""
    out = []
    for _ in range(n):
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
    return min(out)


def test_generation_speed():
    """A 256x256 2D case well under 50 ms (slack x2 for loaded machines); a 256x256x32 volume under 2 s."""
    for d in DOMAINS_2D:
        assert _best_time(lambda: make_phantom_case(d, 5, 256, 0)) < 0.1, d
    assert _best_time(lambda: make_phantom_volume(1, 256, 32, 0), n=1) < 3.0


def test_phantom_store_returns_identical_data_and_recovers(tmp_path):
    """The phantom cache gives back exactly what the generator makes; a corrupt file is regenerated."""
    from frozenseg.config import get_profile
    from frozenseg.data.phantoms import phantom_domain
    from frozenseg.data.store import cached_phantom_domain

    prof = get_profile("smoke")
    fresh = phantom_domain("cxr", prof)
    first = cached_phantom_domain("cxr", prof, root=tmp_path)
    (stored,) = list(tmp_path.glob("cxr-*.pkl"))
    again = cached_phantom_domain("cxr", prof, root=tmp_path)
    for a, b, c in zip(fresh.test, first.test, again.test):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.image, c.image)
        assert np.array_equal(a.mask, c.mask) and a.case_id == c.case_id
    stored.write_bytes(b"truncated")
    healed = cached_phantom_domain("cxr", prof, root=tmp_path)
    assert np.array_equal(healed.test[0].image, fresh.test[0].image)
    other = cached_phantom_domain("cxr", get_profile("smoke", n_test=2), root=tmp_path)
    assert len(other.test) == 2 and len(list(tmp_path.glob("cxr-*.pkl"))) == 2
