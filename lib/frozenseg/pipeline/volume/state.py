"""What the volume skills work on: a frame per slice, the volume's current candidates with their (memoized) gate
values, the record of each stage, and the base class of a volume skill (fire, propose, keep-best per slice)."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ...boxes import clip_box
from ...errors import ConfigError
from .. import gates
from ..frame import Candidate, Frame
from .body import BodyFrame
from .prior import VolumePrior


@dataclass
class SliceFrame(Frame):
    """A Frame of one slice, with the volume prior (the gate's tissue cue; its atlas in the body frame) and the
    trajectory's expectation for this slice (its trajectory cue)."""

    z: int = 0
    vprior: VolumePrior | None = None
    expect: dict | None = None       # {"cx", "cy", "area"} from the within-volume trajectory
    body: BodyFrame | None = None    # the volume's body frame (found from the image)

    @functools.cached_property
    def tissue_grey(self) -> np.ndarray:
        """Grey levels as ranks among the volume's body voxels (the scale of the volume prior's organ grey level)."""
        if self.body is None or self.body.levels is None:
            raise ConfigError(f"slice {self.z}: the tissue cue needs the volume's body frame (SliceFrame(body=...))")
        return self.body.rank(self.grey)

    @functools.cached_property
    def atlas(self) -> np.ndarray:
        """The volume prior's atlas placed in this slice's body box (the 2D atlas without a body frame)."""
        if self.vprior is None or self.body is None or self.vprior.atlas is None:
            return self.prior.atlas_at(self.shape)
        return self.vprior.atlas_at(self.z, self.body)


@dataclass
class VolumeStage:
    """The prediction after one stage: masks of processed slices, and the slices the skill fired / was kept on."""

    name: str
    masks: dict
    gates: dict
    fired: list = field(default_factory=list)
    accepted: list = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class VolumeTrace:
    """Everything one volume went through."""

    slices: list
    stages: list
    decoder_calls: int
    trajectory: dict
    flag: str = ""
    encode_calls: int = 0
    embed_seconds: float = 0.0

    @property
    def final(self) -> dict:
        """{z: mask} of the deployed prediction."""
        return self.stages[-1].masks

    def volume(self, shape, stage: str | None = None) -> np.ndarray:
        """(H, W, D) bool prediction after ``stage`` (default: deployed); unprocessed slices are empty."""
        st = self.stages[-1] if stage is None else next(s for s in self.stages if s.name == stage)
        vol = np.zeros(shape, bool)
        for z, m in st.masks.items():
            vol[:, :, z] = m
        return vol


class VolumeState:
    """Frames and current candidates of one volume while the skills run."""

    def __init__(self, frames: dict, cur: dict, depth: int, prior: VolumePrior, params: dict, embed_crop=None,
                 body: BodyFrame | None = None):
        self.frames, self.cur, self.depth, self.prior, self.params = frames, cur, depth, prior, params
        self.embed_crop = embed_crop
        self.body = body
        self.extent: tuple[int, int] | None = None
        self.trajectory: dict = {}
        self._gates: dict = {}
        self.encode_calls = 0

    @property
    def zs(self) -> list[int]:
        """Processed slices in order."""
        return sorted(self.frames)

    @property
    def present(self) -> list[int]:
        """Slices inside the fitted extent (all processed slices before the trajectory is fit)."""
        if self.extent is None:
            return self.zs
        return [z for z in self.zs if self.extent[0] <= z <= self.extent[1]]

    def gate(self, z: int, cand: Candidate | None = None) -> float:
        """Gate value of a candidate (default: the current one) on slice ``z``, memoized per mask and expectation."""
        cand = self.cur[z] if cand is None else cand
        fr = self.frames[z]
        key = (id(cand.mask), cand.pred_iou, None if fr.expect is None else tuple(fr.expect.values()))
        hit = self._gates.get(key)
        if hit is None or hit[0] is not cand.mask:
            hit = (cand.mask, fr.gate_value(cand))
            self._gates[key] = hit
        return hit[1]

    def snapshot(self, name, fired=(), accepted=(), seconds=0.0) -> VolumeStage:
        """The current prediction as a stage record."""
        return VolumeStage(name, {z: c.mask for z, c in self.cur.items()}, {z: self.gate(z) for z in self.zs},
                           sorted(fired), sorted(accepted), seconds)

    def keep_best(self, z: int, proposals) -> bool:
        """Replace the current candidate of slice ``z`` by the best proposal if it raises the gate
        (:func:`gates.keep_best`, the rule of every skill)."""
        self.cur[z], kept, _ = gates.keep_best(self.cur[z], proposals, lambda c: self.gate(z, c),
                                               self.params["min_gain"])
        return kept


def centroid(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) mean of the mask's pixels."""
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def box_around(cx: float, cy: float, w: float, h: float, shape) -> np.ndarray:
    """A ``w`` x ``h`` box centred on (cx, cy), clipped to the image."""
    return clip_box(np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]), shape)


class VolumeSkill:
    """A skill over the slices of one volume: ``fires(state, z)`` and ``propose(state, z)``, keep-best per slice."""

    name = "volume_skill"
    description = ""
    defaults: dict = {}          # parameter -> default; the pipeline's params hold them as "<skill>.<parameter>"

    def fires(self, state: VolumeState, z: int) -> bool:
        """Whether this skill has anything to do on slice ``z``."""
        return not state.cur[z].empty

    def propose(self, state: VolumeState, z: int) -> list[Candidate]:
        """Candidate masks for slice ``z`` to compare with the current one under the gate."""
        raise NotImplementedError

    def p(self, state: VolumeState, key: str):
        """This skill's parameter ``key`` (``params["<skill>.<key>"]``, like a 2D skill's)."""
        return state.params[f"{self.name}.{key}"]

    def __call__(self, state: VolumeState) -> tuple[list, list]:
        """Run over the slices inside the extent; returns (slices fired on, slices whose proposal was kept)."""
        fired, accepted = [], []
        for z in state.present:
            if self.fires(state, z):
                fired.append(z)
                if state.keep_best(z, self.propose(state, z)):
                    accepted.append(z)
        return fired, accepted
