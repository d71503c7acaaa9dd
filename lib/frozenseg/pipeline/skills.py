"""GT-free skills. Each has a fire condition and proposes candidate masks; the pipeline keeps a proposal only
if the domain's gate scores it higher than the current mask (``gates.keep_best``), so a skill can never lower the
gate.

Parameters are read as ``params["<skill>.<name>"]`` (the genome may set them) with the skill's defaults below.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..boxes import mask_to_box
from ..errors import ConfigError
from ..localizers.base import grow_box
from ..localizers.cpg import select_by_prior
from .frame import Candidate, Frame


def largest_components(mask: np.ndarray, keep_frac: float = 1.0) -> np.ndarray:
    """The largest component, plus any other at least ``keep_frac`` of its size."""
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= keep_frac * sizes.max()) + 1
    return np.isin(lab, keep)


def spread_points(score: np.ndarray, region: np.ndarray, k: int, min_dist: float) -> np.ndarray:
    """Up to ``k`` xy points in ``region`` with the highest ``score``, at least ``min_dist`` apart."""
    ys, xs = np.nonzero(region)
    if ys.size == 0:
        return np.zeros((0, 2))
    order = np.argsort(-score[ys, xs], kind="stable")
    pts: list[tuple[float, float]] = []
    for i in order[: 20000]:
        p = (float(xs[i]), float(ys[i]))
        if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= min_dist ** 2 for q in pts):
            pts.append(p)
            if len(pts) == k:
                break
    return np.array(pts, dtype=float).reshape(-1, 2)


class Skill:
    """Base class: ``fires(frame, current, params)`` and ``propose(frame, current, params)``."""

    name = "skill"
    description = ""
    defaults: dict = {}
    gated = True        # False: the skill decides; its (single) proposal replaces the mask without the gate

    def p(self, params: dict, key: str):
        """This skill's parameter ``key`` from ``params`` (genome or route) or its default."""
        return params.get(f"{self.name}.{key}", self.defaults[key])

    def fires(self, frame: Frame, cur: Candidate, params: dict) -> bool:
        """Whether this skill has anything to do on this image."""
        return not cur.empty

    def propose(self, frame: Frame, cur: Candidate, params: dict) -> list[Candidate]:
        """Candidate masks to compare with the current one under the gate."""
        raise NotImplementedError


class PriorSelect(Skill):
    """Prior-guided SAM mask selection (the source's Kvasir route): of the decoder's multimask outputs for the
    current box, keep the one that agrees best (Dice) with the localizer's transferred prior above its threshold.
    Fires when the localizer left a prior map on the frame (CPG); it decides, no gate."""

    name = "prior_select"
    description = "pick among the decoder's multimask outputs by agreement with the correspondence prior"
    defaults = {"iou_weight": 0.0}
    gated = False

    def fires(self, frame, cur, params):
        loc = frame.localization
        return not cur.empty and cur.box is not None and loc is not None and "prior" in loc.extra

    def propose(self, frame, cur, params):
        extra = frame.localization.extra
        region = extra["prior"] >= extra.get("threshold", 0.5)
        cands = frame.decode_multi(cur.box, origin=self.name)
        k = select_by_prior([c.mask for c in cands], [c.pred_iou for c in cands], region,
                            self.p(params, "iou_weight"))
        return [cands[k]]


class PeakSelect(PriorSelect):
    """Several prior peaks as candidate prompts: the current box and the localizer's other peaks' boxes (CPG
    ``peaks`` > 1, grown by ``box_margin``), each decoded with multimask outputs; the mask agreeing best (Dice) with
    the prior above its threshold is kept (GT-free). With one peak it is ``prior_select``. It decides, no gate."""

    name = "peak_select"
    description = "decode several prior peaks' boxes, keep the mask agreeing best with the prior"

    def propose(self, frame, cur, params):
        extra = frame.localization.extra
        region = extra["prior"] >= extra.get("threshold", 0.5)
        margin = float(params.get("box_margin", 0.0))
        boxes = [cur.box] + [grow_box(b, margin, frame.shape) for b in extra.get("candidate_boxes") or []]
        cands = [c for i, b in enumerate(boxes) for c in frame.decode_multi(b, origin=f"{self.name}_{i}")]
        k = select_by_prior([c.mask for c in cands], [c.pred_iou for c in cands], region,
                            self.p(params, "iou_weight"))
        return [cands[k]]


class PromptEvolve(Skill):
    """Iterative prompt refinement (after OP-SAM's prompt evolution): each round fuses the transferred prior with
    the query's own similarity to the current mask's mean feature, re-derives a box (the fused region's component
    that overlaps the mask most) and a positive point (its peak), decodes them and keeps the multimask output that
    agrees best with the fused region; every round's mask is a proposal under the gate. Fires on CPG answers."""

    name = "prompt_evolve"
    description = "re-derive box and point from the decoded mask and the prior, a few rounds (prompt evolution)"
    defaults = {"rounds": 2, "mix": 0.5, "margin": 0.03}

    def fires(self, frame, cur, params):
        loc = frame.localization
        return not cur.empty and loc is not None and "self_prior" in loc.extra

    def propose(self, frame, cur, params):
        extra, out, mask = frame.localization.extra, [], cur.mask
        mix, t = float(self.p(params, "mix")), float(extra.get("threshold", 0.5))
        for r in range(int(self.p(params, "rounds"))):
            fused = (1 - mix) * extra["prior"] + mix * extra["self_prior"](mask)
            lab, n = ndimage.label(fused >= t * fused.max())
            if n == 0:
                break
            hit = np.bincount(lab[mask], minlength=n + 1)[1:]
            top = np.unravel_index(int(np.argmax(fused)), fused.shape)
            comp = lab == (int(np.argmax(hit)) + 1 if hit.any() else int(lab[top]))
            peak = np.unravel_index(int(np.argmax(np.where(comp, fused, -1))), fused.shape)
            box = grow_box(mask_to_box(comp), self.p(params, "margin"), frame.shape)
            pred = frame.model.decode(frame.embedding, boxes=np.round(box)[None], multimask=True,
                                      points=np.array([[[peak[1], peak[0]]]], float), point_labels=np.ones((1, 1)))
            frame.decoder_calls += 1
            k = select_by_prior(pred.masks, pred.iou, comp)
            c = Candidate(mask=pred.masks[k], box=box, pred_iou=float(pred.iou[k]), origin=f"{self.name}_{r + 1}")
            if c.empty:
                break
            out.append(c)
            mask = c.mask
        return out


class SelfReprompt(Skill):
    """Mask-bbox self-reprompt: decode again from the (grown) box of the current mask, as a fixed-point loop."""

    name = "self_reprompt"
    description = "re-decode from the box of the current mask (fixed-point loop)"
    defaults = {"margin": 0.03, "iters": 2, "components": "largest"}

    def propose(self, frame, cur, params):
        out, mask = [], cur.mask
        whole = self.p(params, "components") == "all"
        for i in range(int(self.p(params, "iters"))):
            box = grow_box(mask_to_box(mask if whole else largest_components(mask)), self.p(params, "margin"),
                           frame.shape)
            c = frame.decode(box=box, origin=f"{self.name}_{i + 1}")
            if c.empty:
                break
            out.append(c)
            mask = c.mask
        return out


class RepairTrim(Skill):
    """Trim over-segmentation outside the few-shot atlas region where the colour model also says background."""

    name = "repair_trim"
    description = "trim out-of-region over-segmentation (atlas + colour), then re-decode its box"
    defaults = {"level": 0.15, "fire_frac": 0.05, "colour": 0.5}

    def _spill(self, frame, cur, params) -> np.ndarray:
        a = frame.atlas
        return cur.mask & (a < self.p(params, "level") * max(a.max(), 1e-6)) & (frame.fg_prob < self.p(params, "colour"))

    def fires(self, frame, cur, params):
        return not cur.empty and self._spill(frame, cur, params).sum() > self.p(params, "fire_frac") * cur.mask.sum()

    def propose(self, frame, cur, params):
        trimmed = largest_components(cur.mask & ~self._spill(frame, cur, params), keep_frac=0.2)
        if not trimmed.any():
            return []
        out = [Candidate(mask=trimmed, box=cur.box, pred_iou=cur.pred_iou, origin=f"{self.name}_cut")]
        out.append(frame.decode(box=mask_to_box(trimmed), origin=f"{self.name}_redecode"))
        return out


class NegativeFix(Skill):
    """Catastrophic fix: positive points on the most target-like pixels, negative points on the spill; re-decode."""

    name = "negative_fix"
    description = "negative-point re-prompt on masks the gate calls catastrophic"
    defaults = {"fire_gate": 0.55, "points": 3, "area_z": 1.5}

    def fires(self, frame, cur, params):
        if cur.empty:
            return False
        z = (np.log(cur.mask.mean()) - frame.prior.log_area_mean) / frame.prior.log_area_sd
        return frame.gate_value(cur) < self.p(params, "fire_gate") or z > self.p(params, "area_z")

    def propose(self, frame, cur, params):
        k = int(self.p(params, "points"))
        like = frame.atlas / max(frame.atlas.max(), 1e-6) * frame.fg_prob
        d = 0.1 * max(frame.shape)
        pos = spread_points(like, cur.mask, k, d)
        neg = spread_points(1 - like, cur.mask & (like < 0.25), k, d)
        if len(pos) == 0 or len(neg) == 0:
            return []
        pts = np.concatenate([pos, neg])
        labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        return [frame.decode(box=cur.box if cur.box is not None else mask_to_box(cur.mask), points=pts,
                             labels=labels, origin=self.name),
                frame.decode(points=pts, labels=labels, origin=f"{self.name}_points")]


class LetterboxTrim(Skill):
    """Drop mask components lying over near-black padding (letterboxed films)."""

    name = "letterbox_trim"
    description = "drop mask components over near-black padding"
    defaults = {"dark": 12.0, "frac": 0.5}

    def _dark_components(self, frame, cur, params):
        lab, n = ndimage.label(cur.mask)
        if n == 0:
            return lab, []
        dark = frame.grey < self.p(params, "dark")
        frac = ndimage.mean(dark, lab, index=np.arange(1, n + 1))
        return lab, [i + 1 for i, f in enumerate(frac) if f >= self.p(params, "frac")]

    def fires(self, frame, cur, params):
        return bool(self._dark_components(frame, cur, params)[1])

    def propose(self, frame, cur, params):
        lab, drop = self._dark_components(frame, cur, params)
        kept = cur.mask & ~np.isin(lab, drop)
        return [Candidate(mask=kept, box=cur.box, pred_iou=cur.pred_iou, origin=self.name)] if kept.any() else []


class Tidy(Skill):
    """Keep the largest component(s) and fill holes."""

    name = "tidy"
    description = "largest component + hole filling"
    defaults = {"keep_frac": 0.3}

    def fires(self, frame, cur, params):
        if cur.empty:
            return False
        lab, n = ndimage.label(cur.mask)
        return n > 1 or ndimage.binary_fill_holes(cur.mask).sum() > cur.mask.sum()

    def propose(self, frame, cur, params):
        m = ndimage.binary_fill_holes(largest_components(cur.mask, self.p(params, "keep_frac")))
        return [Candidate(mask=m, box=cur.box, pred_iou=cur.pred_iou, origin=self.name)]


SKILLS: dict[str, type[Skill]] = {s.name: s for s in (PriorSelect, PeakSelect, PromptEvolve, SelfReprompt, RepairTrim,
                                                      NegativeFix, LetterboxTrim, Tidy)}


def make_skill(name: str) -> Skill:
    """A skill by name (unknown names raise ConfigError listing the known ones)."""
    if name not in SKILLS:
        raise ConfigError(f"unknown skill {name!r}; choose from {sorted(SKILLS)}")
    return SKILLS[name]()
