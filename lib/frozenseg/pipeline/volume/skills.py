"""The volume skills after the trajectory: a selective multi-prototype re-decode, a boundary polish and a pyramid
re-decode of the tiny tip slices; each proposal kept only when the gate improves."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ...boxes import clip_box, mask_to_box
from ...localizers.base import grow_box
from ...localizers.features import SamFeatures
from ..frame import Candidate
from .state import VolumeSkill, centroid


class MultiPrototype(VolumeSkill):
    """Selective multi-prototype re-decode: support slices at a similar position along the organ give prototypes."""

    name = "multi_prototype"
    description = "prototypes of support slices at similar position along the organ; re-decode where the gate is low"
    defaults = {
        "fire_gate": 0.6,        # fires below this gate value
        "k": 3,                  # prototypes (support slices nearest in position along the organ)
    }

    def __init__(self, support=(), embeddings=(), model=None):
        self.space = SamFeatures(model) if model is not None else None
        self.protos = []                               # (t, unit prototype)
        if model is None:
            return
        for c, e in zip(support, embeddings):
            if c.mask.any():
                fm = self.space(c.image, e)
                cover = fm.pool_mask(c.mask)
                keep = cover >= min(0.5, cover.max())
                f = (fm.flat()[keep] * cover[keep][:, None]).sum(0)
                self.protos.append((c, f / max(np.linalg.norm(f), 1e-8)))

    def fires(self, state, z):
        return bool(self.protos) and state.gate(z) < self.p(state, "fire_gate") \
            and state.frames[z].expect is not None

    def propose(self, state, z):
        fr = state.frames[z]
        e = fr.expect
        t = (z - state.extent[0]) / max(state.extent[1] - state.extent[0], 1)
        ts = np.array([state.prior.position(c) for c, _ in self.protos])
        pick = np.argsort(np.abs(ts - t), kind="stable")[: int(self.p(state, "k"))]
        fm = self.space(fr.image, fr.embedding)
        sims = fm.flat() @ np.stack([self.protos[i][1] for i in pick]).T
        sim = fm.grid.upsample(sims.max(1).reshape(fm.grid.shape))
        yy, xx = np.mgrid[: fr.shape[0], : fr.shape[1]]
        r = max(np.sqrt(e["area"] / np.pi), 4.0)
        near = np.hypot(xx - e["cx"], yy - e["cy"]) < 2.5 * r
        if not near.any():
            return []
        thr = np.quantile(sim[near], 0.5)
        binary = near & (sim > thr)
        lab, n = ndimage.label(binary)
        if n == 0:
            return []
        cy, cx = int(np.clip(round(e["cy"]), 0, fr.shape[0] - 1)), int(np.clip(round(e["cx"]), 0, fr.shape[1] - 1))
        k = lab[cy, cx] or int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
        comp = lab == k
        out = [fr.decode(box=grow_box(mask_to_box(comp), state.params["box_margin"], fr.shape),
                         origin="multi_prototype")]
        peak = np.unravel_index(int(np.argmax(np.where(comp, sim, -np.inf))), sim.shape)
        out.append(fr.decode(box=grow_box(mask_to_box(comp), state.params["box_margin"], fr.shape),
                             points=[[peak[1], peak[0]]], labels=[1], origin="multi_prototype_point"))
        return out


class BoundaryPolish(VolumeSkill):
    """SAM re-prompt with the mask's own box (tight and widened) and its most interior point (keep-best)."""

    name = "boundary_polish"
    description = "re-decode with the mask's own box and an interior point"
    defaults = {
        "fire_gate": 0.9,
        "margin": 0.05,
        "iters": 2,
        "grow": 0.25,            # the wider own-box re-prompt (recovers under-segmentation)
    }

    def fires(self, state, z):
        return not state.cur[z].empty and state.gate(z) < self.p(state, "fire_gate")

    def __call__(self, state):
        fired, accepted = set(), set()
        for _ in range(int(self.p(state, "iters"))):     # a fixed-point loop: stop when nothing is kept
            f, a = super().__call__(state)
            fired.update(f)
            accepted.update(a)
            if not a:
                break
        return sorted(fired), sorted(accepted)

    def propose(self, state, z):
        fr, m = state.frames[z], state.cur[z].mask
        box = grow_box(mask_to_box(m), self.p(state, "margin"), fr.shape)
        dt = ndimage.distance_transform_edt(m)
        y, x = np.unravel_index(int(np.argmax(dt)), m.shape)
        wide = grow_box(mask_to_box(m), self.p(state, "grow"), fr.shape)
        return [fr.decode(box=box, points=[[x, y]], labels=[1], origin="polish_box_point"),
                fr.decode(box=wide, points=[[x, y]], labels=[1], origin="polish_wide_box_point")]


def zoom_image(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (h, w, 3) uint8 image to ``shape``."""
    z = (shape[0] / img.shape[0], shape[1] / img.shape[1], 1)
    out = ndimage.zoom(img.astype(np.float32), z, order=1, mode="nearest")[: shape[0], : shape[1]]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


class Pyramid(VolumeSkill):
    """Crop around a tiny tip slice's mask, zoom to the model side, encode (cached), re-decode, paste back."""

    name = "pyramid"
    description = "crop -> zoom -> encode -> re-decode tiny tip slices at higher resolution (keep-best)"
    defaults = {
        "tip_frac": 0.2,         # a tip slice: expected area below this fraction of the largest
        "zoom_side": 256,
        "context": 3.0,          # crop side = context x the expected diameter
    }

    def fires(self, state, z):
        fr = state.frames[z]
        if state.embed_crop is None or fr.expect is None:
            return False
        amax = max(state.trajectory["area"].values()) if getattr(state, "trajectory", None) else 0
        return amax > 0 and fr.expect["area"] < self.p(state, "tip_frac") * amax

    def propose(self, state, z):
        fr, cur = state.frames[z], state.cur[z]
        e = fr.expect
        cx, cy = centroid(cur.mask) if not cur.empty else (e["cx"], e["cy"])
        diam = 2 * np.sqrt(max(e["area"], cur.mask.sum()) / np.pi)
        side = int(np.clip(self.p(state, "context") * diam, 24, min(fr.shape)))
        x0 = int(np.clip(round(cx - side / 2), 0, fr.shape[1] - side))
        y0 = int(np.clip(round(cy - side / 2), 0, fr.shape[0] - side))
        crop = fr.image[y0:y0 + side, x0:x0 + side]
        big = int(self.p(state, "zoom_side"))
        zimg = zoom_image(crop, (big, big))
        emb = state.embed_crop(zimg)
        state.encode_calls += 1
        s = big / side
        src = cur.mask if not cur.empty else None
        if src is not None:
            b = mask_to_box(src)
        else:
            r = np.sqrt(e["area"] / np.pi)
            b = np.array([cx - r, cy - r, cx + r, cy + r])
        zb = clip_box((b - np.array([x0, y0, x0, y0])) * s, (big, big))
        zb = grow_box(zb, state.params["box_margin"], (big, big))
        pred = fr.model.decode(emb, boxes=zb[None])
        fr.decoder_calls += 1
        zm = pred.masks[0]
        small = ndimage.zoom(zm.astype(np.float32), 1 / s, order=1)[:side, :side] >= 0.5
        full = np.zeros(fr.shape, bool)
        full[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
        return [Candidate(mask=full, box=mask_to_box(full) if full.any() else None, pred_iou=float(pred.iou[0]),
                          origin="pyramid")]
