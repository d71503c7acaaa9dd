"""Procedural phantoms of the study's four domains, each showing its domain's failure modes."""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ..config import DOMAINS, Profile, check_domain
from ..errors import ConfigError
from .splits import split_indices
from .types import Case, DomainData, Volume

DOMAIN_CODES = {d: i + 1 for i, d in enumerate(DOMAINS)}
DEFAULT_N_TEST = 30            # phantom test cases when a profile leaves n_test open (real-data profiles)
DEFAULT_TEST_VOLUMES = 3
CT_FOV_MM = 400.0              # in-plane field of view of a phantom CT slice
CT_SLAB_MM = 160.0             # cranio-caudal extent of a phantom CT volume
LETTERBOX_P = 0.3

FAILURE_MODES = {
    "isic": ("pigmented lesion on skin texture: irregular, sometimes multi-lobed blobs with variable contrast and "
             "some faint, low-contrast borders; dark hair strands crossing the lesion; vignetted corners"),
    "kvasir": ("polyp whose colour and texture are close to the mucosa (only slight dome shading and a subtle rim); "
               "darker curved folds as distractors; specular highlights; vignetted circular field of view"),
    "cxr": ("dark lungs in a bright thorax with the mediastinum/heart between them and faint rib arcs; dark bowel and "
            "gastric gas below the diaphragm that can pass for lung; ~30% of films letterboxed with near-black bars"),
    "spleen": ("CT-like volume windowed L40/W400: spleen isodense with the liver and sometimes touching it; stomach, "
               "bowel, kidneys, spine and ribs around it; the spleen's cross-section shrinks to tiny tip slices "
               "and slices at both ends have no spleen"),
}


# ---------------------------------------------------------------- shared helpers

def _rng(domain: str, index: int, seed: int) -> np.random.Generator:
    """Generator of one case, derived from (seed, domain, index) only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, DOMAIN_CODES[domain], int(index)])


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), float32, broadcastable."""
    h, w = shape
    return (np.arange(h, dtype=np.float32)[:, None] + 0.5, np.arange(w, dtype=np.float32)[None, :] + 0.5)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean unit-std noise with feature size ~``scale`` pixels (low-res noise, upsampled)."""
    h, w = shape
    f = max(1.0, scale / 2.0)
    lh, lw = int(math.ceil(h / f)) + 3, int(math.ceil(w / f)) + 3
    low = rng.standard_normal((lh, lw)).astype(np.float32)
    low = ndi.gaussian_filter(low, min(scale, 2.0) / 1.5 if f > 1 else scale, mode="wrap")
    ys = (np.arange(h, dtype=np.float32) + 0.5) / f + 1.0
    xs = (np.arange(w, dtype=np.float32) + 0.5) / f + 1.0
    out = ndi.map_coordinates(low, np.meshgrid(ys, xs, indexing="ij"), order=1, mode="nearest")
    out -= out.mean()
    return out / (out.std() + 1e-6)


def _blob_field(shape, cy, cx, radius, rng, irregular=0.2, harmonics=5, aspect=1.0, angle=0.0):
    """Normalised radial field f (f < 1 inside) of an irregular star-shaped blob."""
    yy, xx = _grid(shape)
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(angle), math.sin(angle)
    u = dx * c + dy * s
    v = (-dx * s + dy * c) * aspect
    r = np.hypot(u, v)
    th = np.arctan2(v, u)
    rad = np.ones_like(th)
    for k in range(2, harmonics + 2):
        rad += (irregular * rng.uniform(0.2, 1.0) / k ** 0.8) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    return r / (radius * np.clip(rad, 0.35, None))


def _soft(field: np.ndarray, radius: float, width: float) -> np.ndarray:
    """Soft inside-weight of a blob field with an edge ``width`` pixels wide (0.5 on the f=1 contour)."""
    return 1.0 / (1.0 + np.exp(np.clip((field - 1.0) * radius / max(width, 0.3), -30, 30)))


def _vignette(shape, strength: float, start: float = 0.5) -> np.ndarray:
    """Multiplicative radial fall-off towards the corners."""
    yy, xx = _grid(shape)
    h, w = shape
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2)) / math.sqrt(2)
    return 1.0 - strength * np.clip((r - start) / (1 - start), 0, 1) ** 2


def _curve_map(shape, rng, n, length, thickness, bend) -> np.ndarray:
    """Soft map in [0, 1] of ``n`` thin random curved strands (hairs)."""
    h, w = shape
    acc = np.zeros(shape, np.float32)
    for _ in range(n):
        p0 = np.array([rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w])
        a = rng.uniform(0, 2 * np.pi)
        d = np.array([math.sin(a), math.cos(a)])
        nrm = np.array([-d[1], d[0]])
        L = rng.uniform(*length) * max(h, w)
        t = np.linspace(0, 1, int(L * 2) + 2)[:, None]
        pts = p0 + t * L * d + (bend * rng.uniform(-1, 1) * L) * (t ** 2) * nrm
        iy, ix = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        acc[iy[ok], ix[ok]] = rng.uniform(0.6, 1.0)
    if thickness > 1.2:
        acc = ndi.grey_dilation(acc, size=(2, 2))
    return np.clip(ndi.gaussian_filter(acc, 0.6) * 2.2, 0, 1)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 255] to uint8 (rounded, clipped)."""
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _finish_rgb(rng, img: np.ndarray, blur: float, noise: float) -> np.ndarray:
    """Blur each channel, add pixel noise, convert to uint8."""
    img = ndi.gaussian_filter(img, (blur, blur, 0)) if blur > 0 else img
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    return _to_uint8(img)


# ---------------------------------------------------------------- ISIC (dermoscopy)

def _isic(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Skin texture + pigmented lesion + hair + vignetting; mask = lesion."""
    shape = (size, size)
    skin = np.array([rng.uniform(200, 235), rng.uniform(150, 185), rng.uniform(125, 160)], np.float32)
    tex = 0.05 * _smooth_noise(rng, shape, size / 6) + 0.025 * _smooth_noise(rng, shape, size / 40)
    img = skin[None, None, :] * (1.0 + tex[..., None])
    n_lobes = int(rng.choice([1, 1, 2, 3]))
    radius = rng.uniform(0.17, 0.28) * size
    cy, cx = size * (0.5 + rng.uniform(-0.08, 0.08)), size * (0.5 + rng.uniform(-0.08, 0.08))
    field = _blob_field(shape, cy, cx, radius, rng, irregular=rng.uniform(0.1, 0.35),
                        aspect=rng.uniform(1.0, 1.5), angle=rng.uniform(0, np.pi))
    for _ in range(n_lobes - 1):
        a, rr = rng.uniform(0, 2 * np.pi), radius * rng.uniform(0.45, 0.7)
        oy, ox = cy + math.sin(a) * radius * 0.75, cx + math.cos(a) * radius * 0.75
        lobe = _blob_field(shape, oy, ox, rr, rng, irregular=0.2)
        field = np.minimum(field, 1.0 + (lobe - 1.0) * rr / radius)    # same pixel scale as the main blob
    faint = bool(rng.random() < 0.45)
    contrast = rng.uniform(0.45, 0.65) if faint else rng.uniform(0.6, 0.9)
    edge = rng.uniform(0.025, 0.045) * size if faint else rng.uniform(0.01, 0.022) * size
    alpha = _soft(field, radius, edge) * contrast
    core = np.clip(1.0 - field, 0, 1) ** 0.7                        # darker towards the centre
    alpha *= (0.75 + 0.25 * core) * (1.0 + 0.15 * _smooth_noise(rng, shape, size / 25))
    pig = np.array([rng.uniform(90, 150), rng.uniform(50, 90), rng.uniform(35, 70)], np.float32)
    dots = np.clip(_smooth_noise(rng, shape, 3.0), 0.8, None) - 0.8
    pig_img = pig[None, None, :] * (1.0 - 0.35 * dots[..., None])
    alpha = np.clip(alpha, 0, 1)[..., None]
    img = img * (1 - alpha) + pig_img * alpha
    n_hair = int(rng.integers(0, 14))
    hair = _curve_map(shape, rng, n_hair, (0.3, 1.0), rng.uniform(1.0, 2.0), 0.35)[..., None]
    hair_col = np.array([45, 30, 25], np.float32) * rng.uniform(0.6, 1.2)
    img = img * (1 - 0.85 * hair) + hair_col * 0.85 * hair
    img *= _vignette(shape, rng.uniform(0.2, 0.7), start=rng.uniform(0.45, 0.7))[..., None]
    mask = field < 1.0
    meta = {"lobes": n_lobes, "faint_border": faint, "hairs": n_hair, "contrast": round(float(contrast), 3)}
    return _finish_rgb(rng, img, 0.7, 3.0), mask, meta


# ---------------------------------------------------------------- Kvasir (endoscopy)

def _folds(rng, shape, n) -> np.ndarray:
    """Shading field of ``n`` curved mucosal folds (dark groove beside a lit crest)."""
    h, w = shape
    yy, xx = _grid(shape)
    out = np.zeros(shape, np.float32)
    for _ in range(n):
        a = rng.uniform(0, 2 * np.pi)
        R = rng.uniform(0.5, 1.3) * max(h, w)
        dist_c = R + rng.uniform(-0.35, 0.35) * max(h, w)
        cy, cx = h / 2 + math.sin(a) * dist_c, w / 2 + math.cos(a) * dist_c
        d = np.hypot(yy - cy, xx - cx) - R
        wd = rng.uniform(0.012, 0.03) * max(h, w)
        depth = rng.uniform(0.12, 0.3)
        out += -depth * np.exp(-((d - 0.6 * wd) / wd) ** 2) + 0.5 * depth * np.exp(-((d + 0.9 * wd) / wd) ** 2)
    return out


def _speculars(rng, shape, n, weight=None) -> np.ndarray:
    """Soft map of ``n`` small specular highlights, optionally placed by a weight map."""
    h, w = shape
    acc = np.zeros(shape, np.float32)
    if weight is not None and weight.sum() > 0:
        p = (weight / weight.sum()).ravel()
        flat = rng.choice(h * w, size=n, p=p)
        ys, xs = flat // w, flat % w
    else:
        ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    acc[ys, xs] = rng.uniform(0.5, 1.0, n) * 60
    sig = max(0.8, h / 220)
    acc = ndi.gaussian_filter(ndi.grey_dilation(acc, size=(3, 3)) if h > 160 else acc, sig)
    return np.clip(acc, 0, 1)


def _polyp(rng, shape, light_yx) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Polyp field, soft inside-weight, lit-dome term and shading change (raised dome, subtle rim)."""
    size = shape[0]
    radius = rng.uniform(0.12, 0.24) * size
    cy, cx = size * rng.uniform(0.35, 0.65), size * rng.uniform(0.35, 0.65)
    field = _blob_field(shape, cy, cx, radius, rng, irregular=rng.uniform(0.05, 0.18),
                        aspect=rng.uniform(1.0, 1.35), angle=rng.uniform(0, np.pi))
    inside = _soft(field, radius, 1.5)
    height = np.sqrt(np.clip(1.0 - field ** 2, 0, 1)) * inside
    gy, gx = np.gradient(ndi.gaussian_filter(height, 2.0) * radius * 0.6)
    ly, lx = light_yx[0] - cy, light_yx[1] - cx
    dome = -(gy * ly + gx * lx) / (math.hypot(ly, lx) + 1e-6)      # lit side of the dome brighter
    rim = np.exp(-(((field - 1.0) * radius) / rng.uniform(1.2, 2.5)) ** 2)
    delta = rng.uniform(0.15, 0.3) * dome + rng.uniform(0.05, 0.14) * height - rng.uniform(0.06, 0.14) * rim
    delta += 0.04 * inside * _smooth_noise(rng, shape, 4.0)        # slightly grainier surface
    return field, inside, dome, delta


def _kvasir(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pinkish-red mucosa with folds, speculars and a mucosa-coloured polyp; circular vignetted FOV."""
    shape = (size, size)
    yy, xx = _grid(shape)
    base = np.array([rng.uniform(175, 215), rng.uniform(80, 115), rng.uniform(70, 100)], np.float32)
    light_y, light_x = size * rng.uniform(0.3, 0.7), size * rng.uniform(0.3, 0.7)
    light = 0.65 + 0.45 * np.exp(-((yy - light_y) ** 2 + (xx - light_x) ** 2) / (2 * (0.45 * size) ** 2))
    shade = light * (1.0 + 0.06 * _smooth_noise(rng, shape, size / 8)) + _folds(rng, shape, int(rng.integers(2, 6)))
    field, inside, dome, delta = _polyp(rng, shape, (light_y, light_x))
    tint = np.array([rng.uniform(-8, 12), rng.uniform(-5, 10), rng.uniform(-5, 8)], np.float32)
    img = (base[None, None, :] + tint * inside[..., None]) * (shade + delta)[..., None]
    spec = _speculars(rng, shape, int(rng.integers(6, 20)), None)
    spec = np.maximum(spec, _speculars(rng, shape, int(rng.integers(2, 6)), np.clip(dome, 0, None) * inside + 1e-3 * inside))
    img = img * (1 - spec[..., None]) + 250.0 * spec[..., None]
    fov_r = size * 0.5 * rng.uniform(1.0, 1.15)
    r = np.hypot(yy - size / 2, xx - size / 2)
    img *= (_vignette(shape, rng.uniform(0.3, 0.6), 0.3) * np.clip((fov_r - r) / 1.5, 0, 1))[..., None]
    mask = (field < 1.0) & (r < fov_r - 1)
    return _finish_rgb(rng, img, 0.8, 3.0), mask, {"fov_radius": round(float(fov_r), 1)}


# ---------------------------------------------------------------- CXR (chest X-ray)

def _ellipse(yy, xx, cy, cx, ay, ax):
    """Normalised ellipse field (< 1 inside)."""
    return np.sqrt(((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2)


def _ribs(yy, xx, h, w, rng, v_top, v_bot) -> np.ndarray:
    """Faint bright posterior-rib arcs on both sides."""
    out = np.zeros(np.broadcast_shapes(yy.shape, xx.shape), np.float32)
    dx = np.abs(xx / w - 0.5)
    n = int(rng.integers(8, 11))
    th = rng.uniform(0.010, 0.016) * h
    for i in range(n):
        y0 = (v_top + (v_bot - v_top) * i / n) * h
        arc = y0 + (-0.15 * dx + 0.9 * dx * dx) * h
        band = np.exp(-((yy - arc) / th) ** 2) * (dx > 0.04) * (dx < 0.44)
        out += band * (0.6 + 0.4 * (dx / 0.44))
    return out


def _cxr_lungs(rng, v, u, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union lung mask, heart mask and diaphragm height (per pixel) of one film."""
    j = lambda s: rng.uniform(-s, s)  # noqa: E731
    h, w = shape
    dia = (0.74 + j(0.04), 0.78 + j(0.04))
    mask = np.zeros(shape, bool)
    dome = np.zeros(shape, np.float32)
    for k, cxl in enumerate((0.29 + j(0.02), 0.71 + j(0.02))):
        cy, ay, ax = 0.5 + j(0.02), 0.33 + j(0.03), 0.16 + j(0.015)
        f = _blob_field(shape, cy * h, cxl * w, ax * w, rng, irregular=0.06, aspect=ax * w / (ay * h))
        dome_k = dia[k] - 0.07 * np.clip(1 - ((u - cxl) / 0.17) ** 2, 0, 1)
        side = (u < 0.5) if k == 0 else (u >= 0.5)
        dome = np.where(side, dome_k, dome)
        mask |= (f < 1) & (v < dome_k) & (np.abs(u - 0.5) > 0.07 + j(0.01)) & side
    heart = _ellipse(v, u, 0.67 + j(0.03), 0.545 + j(0.02), 0.13 + j(0.02), 0.17 + j(0.02)) < 1
    return mask & ~heart, heart, dome


def _cxr_gas(rng, shape, v, u, dome, lung) -> np.ndarray:
    """Soft map of gastric bubble (under the left hemidiaphragm) and bowel gas."""
    h, w = shape
    gas = np.zeros(shape, np.float32)
    for k in range(int(rng.integers(3, 8))):
        if k == 0:
            gx = 0.68 + rng.uniform(-0.05, 0.05)
            gy = float(dome[0, min(w - 1, int(gx * w))]) + rng.uniform(0.03, 0.06)
        else:
            gy, gx = rng.uniform(0.86, 1.02), rng.uniform(0.25, 0.75)
        r = rng.uniform(0.03, 0.07) * w
        f = _blob_field(shape, gy * h, gx * w, r, rng, 0.3, aspect=rng.uniform(0.6, 1.5))
        gas = np.maximum(gas, _soft(f, r, 1.5) * (v > dome + 0.01))
    return gas * (1 - lung)


def _cxr_lung_fill(rng, img, mask, u, v) -> tuple[np.ndarray, np.ndarray]:
    """Blend lung parenchyma (vessels, hilar markings, bright rim and bases) into ``img``; returns (img, soft mask)."""
    h, w = mask.shape
    soft_mask = ndi.gaussian_filter(mask.astype(np.float32), rng.uniform(2.0, 4.0))
    edge = np.clip(ndi.distance_transform_edt(mask) / (0.08 * w), 0, 1) ** 0.7
    vessels = np.clip(0.5 + 0.5 * _smooth_noise(rng, (h, w), max(h, w) / 60), 0, 1)
    hilum = np.exp(-(((u - 0.5) / 0.18) ** 2 + ((v - 0.5) / 0.18) ** 2))
    lung_val = (0.22 + 0.08 * vessels * (0.4 + 1.5 * hilum) + 0.2 * np.clip(v - 0.5, 0, 1)
                + rng.uniform(0.12, 0.22) * (1 - edge))             # chest wall overlaps the lung rim
    return img * (1 - soft_mask) + lung_val * soft_mask, soft_mask


def _cxr_overlays(rng, heart, soft_mask, u, v) -> np.ndarray:
    """Additive heart, mediastinum/spine, clavicles, apical haze and (sometimes) breast shadows."""
    du = np.abs(u - 0.5)
    w = heart.shape[1]
    add = rng.uniform(0.05, 0.1) * ndi.gaussian_filter(heart.astype(np.float32), rng.uniform(2.0, 4.0))
    add = add + 0.12 * np.clip((0.08 - du) / 0.02, 0, 1) * np.clip((0.85 - v) / 0.1, 0, 1)
    clav = v - (0.17 + rng.uniform(-0.02, 0.03) - 0.32 * du + 0.15 * du * du)
    add = add + rng.uniform(0.08, 0.14) * np.exp(-(clav / 0.018) ** 2) * (du > 0.03) * (du < 0.36)
    add = add + rng.uniform(0.04, 0.1) * np.exp(-((v - 0.2) / 0.07) ** 2) * soft_mask
    if rng.random() < 0.5:
        add = add + rng.uniform(0.08, 0.16) * _soft(_ellipse(v, du, 0.78, 0.3, 0.12, 0.14), 0.12 * w, 0.03 * w)
    return add


def _cxr_content(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey chest film (float in [0, 1]) and its union lung mask, on an (h, w) canvas."""
    yy, xx = _grid((h, w))
    u, v = xx / w, yy / h
    du = np.abs(u - 0.5)
    body = np.clip((0.47 + rng.uniform(-0.02, 0.02) - du) / 0.03, 0, 1)
    body = body * np.clip((v - 0.35 * np.clip(du - 0.22, 0, None)) / 0.04, 0, 1)   # shoulders
    img = 0.12 + 0.5 * body + 0.08 * (1 - du * 2)
    mask, heart, dome = _cxr_lungs(rng, v, u, (h, w))
    img = img + 0.08 * ((v > dome) & (body > 0.5))                  # dense abdomen
    img, soft_mask = _cxr_lung_fill(rng, img, mask, u, v)
    img = img + _cxr_overlays(rng, heart, soft_mask, u, v)
    img = img * (1 - 0.55 * _cxr_gas(rng, (h, w), v, u, dome, mask))
    img += rng.uniform(0.06, 0.11) * _ribs(yy, xx, h, w, rng, 0.14, 0.72) * (body > 0.5)
    img *= 1.0 + 0.05 * _smooth_noise(rng, (h, w), max(h, w) / 10)
    return np.clip(img, 0, 1), mask


def _letterbox(rng, size) -> tuple[int, int, int, int] | None:
    """Content box (y0, y1, x0, x1) of a letterboxed film, or None for a full-frame film."""
    if rng.random() >= LETTERBOX_P:
        return None
    extent = int(round(size * rng.uniform(0.6, 0.82)))
    off = int(round((size - extent) * rng.uniform(0.35, 0.65)))
    if rng.random() < 0.6:
        return (0, size, off, off + extent)                          # bars left/right
    return (off, off + extent, 0, size)                              # bars top/bottom


def _cxr(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Grey chest film (RGB-replicated) with union lung mask; some letterboxed."""
    box = _letterbox(rng, size)
    y0, y1, x0, x1 = box if box else (0, size, 0, size)
    content, cmask = _cxr_content(rng, y1 - y0, x1 - x0)
    grey = np.full((size, size), rng.uniform(0.0, 0.02), np.float32)
    mask = np.zeros((size, size), bool)
    grey[y0:y1, x0:x1] = content
    mask[y0:y1, x0:x1] = cmask
    grey = ndi.gaussian_filter(grey, 0.9) * 255.0 * rng.uniform(0.9, 1.05)
    grey = grey + rng.normal(0, 3.0, grey.shape).astype(np.float32)
    if box:
        bar = np.ones((size, size), bool)
        bar[y0:y1, x0:x1] = False
        grey[bar] = np.abs(grey[bar] - grey[bar].mean()) * 0.3 + 2.0   # near-black padding
    g = _to_uint8(grey)
    meta = {"letterbox": box is not None, "content_box": [int(y0), int(y1), int(x0), int(x1)]}
    return np.repeat(g[..., None], 3, axis=2), mask, meta


# ---------------------------------------------------------------- Spleen (CT volume)

HU = {"air": -950, "fat": -100, "muscle": 50, "liver": 100, "spleen": 104, "stomach_wall": 60, "fluid": 12,
      "kidney": 160, "bowel": 35, "bone": 650, "vessel": 150}


def _window(hu: np.ndarray, level: float = 40.0, width: float = 400.0) -> np.ndarray:
    """HU to [0, 255] float under a window."""
    return (hu - (level - width / 2)) / width * 255.0


def _tip_profile(z: np.ndarray, zc: float, hz: float) -> np.ndarray:
    """Cross-section scale along z of an ellipsoid-like organ (0 outside, tiny at the tips)."""
    t = np.abs(z - zc) / hz
    return np.where(t < 1, np.clip(1 - t ** 2, 0, 1) ** 0.6, 0.0)


def _volume_plan(rng: np.random.Generator, depth: int) -> dict:
    """Per-volume anatomy parameters (positions normalised to the slice side)."""
    j = lambda s: rng.uniform(-s, s)  # noqa: E731
    span = rng.uniform(0.45, 0.7) * depth                            # spleen's cranio-caudal extent
    hz = math.floor(max(2.0, span / 2)) + rng.uniform(0.05, 0.3)     # end slices near |t| = 1 -> tiny tips
    lo = math.ceil(hz) + 1
    zc = float(rng.integers(lo, max(lo, depth - 1 - lo) + 1)) if depth > 2 * lo else float(depth // 2)
    bowel = [(rng.uniform(0.3, 0.55), rng.uniform(0.38, 0.66), rng.uniform(0.03, 0.05), j(0.01), j(0.01))
             for _ in range(int(rng.integers(3, 7)))]
    return {
        "body": (0.5 + j(0.02), 0.5 + j(0.01), 0.33 + j(0.03), 0.43 + j(0.03)),
        "spleen": (0.63 + j(0.03), 0.74 + j(0.02), 0.13 + j(0.02), 0.065 + j(0.01), rng.uniform(-1.05, -0.6)),
        "spleen_z": (zc, hz), "drift": (j(0.03), j(0.03)),
        "liver": (0.48 + j(0.03), 0.32 + j(0.02), 0.22 + j(0.02), 0.17 + j(0.02)),
        "lobe_gap": 0.0 if rng.random() < 0.6 else rng.uniform(0.02, 0.05),
        "liver_bottom": rng.uniform(0.75, 1.05) * depth,
        "stomach": (0.4 + j(0.03), 0.58 + j(0.03), 0.07 + j(0.015), 0.08 + j(0.015)),
        "stomach_bottom": rng.uniform(0.4, 0.65) * depth, "bowel": bowel,
        "kidney_top": rng.uniform(0.45, 0.7) * depth, "rib_phase": rng.uniform(0, 2 * np.pi),
        "contrast": rng.uniform(0.9, 1.1),
    }


def _spleen_shape(p: dict, z: int, u, v) -> tuple[np.ndarray, tuple[float, float]]:
    """Spleen cross-section of slice ``z`` (crescent, tiny near the tips) and its anterior pole (u, v)."""
    zc, hz = p["spleen_z"]
    scale = float(_tip_profile(np.array(z, float), zc, hz))
    spy, spx, a1, a2, ang = p["spleen"]
    t = float(np.clip((z - zc) / hz, -1, 1))
    cy, cx = spy + p["drift"][0] * t, spx + p["drift"][1] * t
    c, s = math.cos(ang), math.sin(ang)
    pole_scale = max(scale, 0.6)
    pole = (cx + a1 * pole_scale * c * 0.95, cy + a1 * pole_scale * s * 0.95)
    if scale <= 0:
        return np.zeros(np.broadcast_shapes(u.shape, v.shape), bool), pole
    du, dv = u - cx, v - cy
    r1, r2 = du * c + dv * s, -du * s + dv * c
    mask = (r1 / (a1 * scale)) ** 2 + (r2 / (a2 * scale)) ** 2 < 1
    if scale > 0.5:                                                  # concave hilum on the medial side
        mask &= ((r1 / (a1 * 0.5)) ** 2 + ((r2 + a2 * 1.45) / (a2 * 0.75)) ** 2) >= 1
    if not mask.any():                                               # keep at least the centre pixel
        iy = np.argmin(np.abs(v[:, 0] - cy)) if v.shape[0] > 1 else 0
        ix = np.argmin(np.abs(u[0, :] - cx)) if u.shape[1] > 1 else 0
        mask[iy, ix] = True
    return mask, pole


def _liver_shape(p: dict, z: int, u, v, pole: tuple[float, float]) -> np.ndarray:
    """Liver cross-section: right lobe shrinking caudally; left lobe reaching towards the spleen cranially."""
    zf = z / max(1.0, p["liver_bottom"])
    ly, lx, lay, lax = p["liver"]
    ls = float(np.clip(1.15 - zf ** 2, 0, 1)) ** 0.5
    liver = np.zeros(np.broadcast_shapes(u.shape, v.shape), bool)
    if ls > 0.05:
        liver |= _ellipse(v, u, ly, lx, lay * ls, lax * ls) < 1
    zc, hz = p["spleen_z"]
    reach = 1.0 - (z - zc) / (0.6 * hz)                              # left lobe fades below the spleen's middle
    if reach > 0:
        k = min(1.0, reach)
        end = (0.4 + (pole[0] - p["lobe_gap"] - 0.4) * k, ly - 0.12 + (pole[1] - ly + 0.12) * k)
        liver |= _tongue(u, v, (0.38, ly - 0.12), (0.6, 0.27), end, 0.05 * min(1.0, reach + 0.5))
    return liver


def _tongue(u, v, p0, p1, p2, half_width: float) -> np.ndarray:
    """Pixels within ``half_width`` of a quadratic Bezier curve p0 -> p2 (control p1), tapering to the end."""
    best = np.full(np.broadcast_shapes(u.shape, v.shape), np.inf, np.float32)
    for t in np.linspace(0, 1, 32):
        cu = (1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t ** 2 * p2[0]
        cv = (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t ** 2 * p2[1]
        best = np.minimum(best, np.hypot(u - cu, v - cv) / (half_width * (1.0 - 0.45 * t)))
    return best < 1


def _spleen_slice(p: dict, z: int, yy, xx, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HU image, spleen mask and visible-liver mask of axial slice ``z``."""
    u, v = xx / size, yy / size
    by, bx, bay, bax = p["body"]
    body_f = _ellipse(v, u, by, bx, bay, bax)
    hu = np.full((size, size), HU["air"], np.float32)
    hu[body_f < 1] = HU["fat"]
    hu[body_f < 0.93] = HU["muscle"]
    inner = body_f < 0.88
    hu[inner] = HU["fat"] + 20
    spleen, pole = _spleen_shape(p, z, u, v)
    spleen &= body_f < 0.9
    liver = _liver_shape(p, z, u, v, pole) & inner
    sy, sx, say, sax = p["stomach"]
    if z < p["stomach_bottom"]:
        sf = _ellipse(v, u, sy, sx, say, sax)
        hu[(sf < 1) & inner] = HU["stomach_wall"]
        hu[(sf < 0.8) & inner] = HU["fluid"]
        hu[(sf < 0.8) & inner & (v < sy - 0.03)] = HU["air"]
    if z > p["stomach_bottom"] - 2:
        for (bv, bu, br, dv, du) in p["bowel"]:                      # bowel loops with gas, drifting in z
            f = _ellipse(v, u, bv + dv * z, bu + du * z, br, br * 1.2)
            hu[(f < 1) & inner] = HU["bowel"]
            hu[(f < 0.4) & inner] = HU["air"]
    hu[liver] = HU["liver"] * p["contrast"]
    if z > p["kidney_top"]:
        ks = min(1.0, (z - p["kidney_top"]) / 3 + 0.3)
        for kx in (0.36, 0.66):
            kf = _ellipse(v, u, 0.68, kx, 0.06 * ks, 0.045 * ks)
            hu[kf < 1] = HU["kidney"]
            hu[kf < 0.5] = HU["fluid"] + 20
    hu[spleen] = HU["spleen"] * p["contrast"]
    _skeleton(hu, p, z, u, v)
    return hu, spleen, liver & ~spleen & (hu == np.float32(HU["liver"] * p["contrast"]))


def _skeleton(hu: np.ndarray, p: dict, z: int, u, v) -> None:
    """Draw aorta, vertebra and ribs into ``hu`` in place."""
    by, bx, bay, bax = p["body"]
    hu[(_ellipse(v, u, 0.6, 0.47, 0.022, 0.022) < 1)] = HU["vessel"]   # aorta
    hu[(_ellipse(v, u, 0.71, 0.5, 0.055, 0.06) < 1)] = HU["bone"]      # vertebral body
    hu[(_ellipse(v, u, 0.71, 0.5, 0.035, 0.04) < 1)] = HU["bone"] * 0.5
    hu[(_ellipse(v, u, 0.8, 0.5, 0.025, 0.015) < 1)] = HU["bone"]      # spinous process
    for k in range(9):                                                 # ribs along the body wall
        a = p["rib_phase"] + 0.1 * z + k * 2 * np.pi / 9
        if -0.5 < math.sin(a) < 1.0:
            ry, rx = by + 0.91 * bay * math.sin(a), bx + 0.91 * bax * math.cos(a)
            hu[_ellipse(v, u, ry, rx, 0.014, 0.014) < 1] = HU["bone"]


def _spleen_arrays(rng: np.random.Generator, size: int, depth: int):
    """Windowed uint8 CT volume (H, W, D), spleen mask, liver mask and meta."""
    p = _volume_plan(rng, depth)
    yy, xx = _grid((size, size))
    hu = np.empty((size, size, depth), np.float32)
    mask = np.zeros((size, size, depth), bool)
    liver = np.zeros((size, size, depth), bool)
    for z in range(depth):
        hu[:, :, z], mask[:, :, z], liver[:, :, z] = _spleen_slice(p, z, yy, xx, size)
    tex = np.stack([_smooth_noise(rng, (size, size), size / 30) for _ in range(2)], axis=2)
    tex = tex[:, :, np.arange(depth) % 2]
    hu += 6.0 * tex
    hu = ndi.gaussian_filter(hu, (0.8, 0.8, 0.4))
    hu += rng.normal(0, 9.0, hu.shape).astype(np.float32)
    img = _to_uint8(_window(hu))
    meta = {"spleen_center_z": round(p["spleen_z"][0], 2), "spleen_half_extent": round(p["spleen_z"][1], 2),
            "liver_touches_spleen": p["lobe_gap"] == 0.0}
    return img, mask, liver, meta


def _spleen_volume(rng: np.random.Generator, size: int, depth: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Windowed uint8 CT volume (H, W, D), spleen mask and meta."""
    img, mask, _, meta = _spleen_arrays(rng, size, depth)
    return img, mask, meta


# ---------------------------------------------------------------- public API

_MAKERS = {"isic": _isic, "kvasir": _kvasir, "cxr": _cxr}


def make_phantom_case(domain: str, index: int, size: int, seed: int) -> Case:
    """One 2D phantom case of ``domain`` (isic, kvasir, cxr), deterministic in (seed, index)."""
    if domain not in _MAKERS:
        check_domain(domain)
        raise ConfigError(f"{domain!r} is a volume domain: use make_phantom_volume / slices of it")
    if size < 32:
        raise ConfigError(f"phantom size must be >= 32 pixels, got {size}")
    image, mask, meta = _MAKERS[domain](_rng(domain, index, seed), int(size))
    meta.update({"index": int(index), "seed": int(seed), "phantom": True})
    return Case(case_id=f"{domain}_p{index:05d}", domain=domain, image=image, mask=mask, source="phantom", meta=meta)


def make_phantom_volume(index: int, size: int, depth: int, seed: int) -> Volume:
    """One CT-like spleen phantom volume (H, W, D), deterministic in (seed, index)."""
    if size < 32 or depth < 6:
        raise ConfigError(f"phantom volume needs size >= 32 and depth >= 6, got {size} x {depth}")
    image, mask, meta = _spleen_volume(_rng("spleen", index, seed), int(size), int(depth))
    meta.update({"index": int(index), "seed": int(seed), "window": "L40/W400"})
    px = CT_FOV_MM / size
    spacing = (round(px, 4), round(px, 4), round(CT_SLAB_MM / depth, 4))
    return Volume(volume_id=f"spleen_p{index:03d}", domain="spleen", image=image, mask=mask,
                  spacing=spacing, source="phantom", meta=meta)


def _phantom_2d(domain: str, profile: Profile, seed: int) -> DomainData:
    """Train pool and fixed test split of a 2D phantom domain."""
    n_test = DEFAULT_N_TEST if profile.n_test is None else int(profile.n_test)
    tr, te = split_indices(profile.n_train + n_test, n_test, profile.data_seed)
    make = lambda i: make_phantom_case(domain, i, profile.phantom_size, seed)  # noqa: E731
    train, test = [make(i) for i in tr], [make(i) for i in te]
    meta = {"failure_modes": FAILURE_MODES[domain], "seed": seed, "test_indices": te, "n_train": len(train),
            "n_test": len(test), "size": profile.phantom_size}
    if domain == "cxr":
        meta["letterboxed"] = [c.case_id for c in train + test if c.meta["letterbox"]]
    return DomainData(domain=domain, source="phantom", train=train, test=test, meta=meta)


def _phantom_spleen(profile: Profile, seed: int) -> DomainData:
    """Spleen-containing slices of train volumes, and test volumes with every one of their slices."""
    n_te = DEFAULT_TEST_VOLUMES if profile.spleen_test_volumes is None else int(profile.spleen_test_volumes)
    tr, te = split_indices(profile.spleen_train_volumes + n_te, n_te, profile.data_seed)
    make = lambda i: make_phantom_volume(i, profile.phantom_size, profile.phantom_depth, seed)  # noqa: E731
    meta = {"failure_modes": FAILURE_MODES["spleen"], "seed": seed, "size": profile.phantom_size,
            "depth": profile.phantom_depth}
    return DomainData.from_volumes("spleen", "phantom", [make(i) for i in tr], [make(i) for i in te], meta)


def phantom_domain(domain: str, profile: Profile, seed: int | None = None) -> DomainData:
    """Phantom DomainData of ``domain`` at the profile's sizes (generation seed defaults to profile.data_seed)."""
    check_domain(domain)
    seed = profile.data_seed if seed is None else int(seed)
    if domain == "spleen":
        return _phantom_spleen(profile, seed)
    return _phantom_2d(domain, profile, seed)
