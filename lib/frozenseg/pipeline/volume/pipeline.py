"""The spleen volume pipeline: the volume-prior box on every slice of the prior's z-range, decoded by the frozen
model, then the volume skills in order, each proposal kept only when the gate (image cues plus the tissue and
trajectory cues) improves; every stage recorded, so the ablation is read off one run."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ...errors import ConfigError, DataError
from ...localizers.base import grow_box
from ..gates import Gate
from .body import BodyFrame
from .prior import VolumePrior
from .skills import BoundaryPolish, MultiPrototype, Pyramid
from .state import SliceFrame, VolumeSkill, VolumeState, VolumeTrace
from .trajectory import WithinVolumePrior

LOCALIZE = "localize"
SKILLS = {s.name: s for s in (WithinVolumePrior, MultiPrototype, BoundaryPolish, Pyramid)}
SKILL_ORDER = tuple(SKILLS)
STAGES = (LOCALIZE, *SKILL_ORDER)

# Every parameter: the box margins, each skill's "<skill>.<parameter>" (the skills' defaults) and the keep-best gain.
DEFAULT_PARAMS = {
    "box_margin": 0.15,          # grow of the volume-prior box (genome start; chosen on two train volumes, DEV_NOTE)
    "range_margin": 1,           # extra slices on each side of the prior's z-range
    **{f"{name}.{k}": v for name, skill in SKILLS.items() for k, v in skill.defaults.items()},
    "min_gain": 1e-3,            # a proposal is kept when it beats the current gate by more than this
}
DEV_NOTE = ("box_margin was chosen from {0, 0.05, ..., 0.3} by the whole pipeline's 3D Dice on two labelled train "
            "phantom volumes (spleen_p000, spleen_p001; volume prior refit without the evaluated volume); the other "
            "values are design defaults. No test volume was used.")
# The gate's weights: the image cues, the organ's grey level (tissue) and the trajectory (inside the fitted extent).
DEFAULT_GATE = {"pred_iou": 1.0, "atlas": 0.5, "colour": 0.0, "area": 0.0, "compact": 1.0, "edge": 1.0,
                "tissue": 2.0, "trajectory": 2.0}


class VolumePipeline:
    """Volume prior + frozen decoder + the volume skills, for one domain (spleen)."""

    def __init__(self, model, params: dict | None = None, gate: dict | None = None, skills=SKILL_ORDER):
        unknown = set(params or {}) - set(DEFAULT_PARAMS)
        if unknown:
            raise ConfigError(f"unknown volume-pipeline parameter(s) {sorted(unknown)}; "
                              f"valid: {sorted(DEFAULT_PARAMS)}")
        bad = set(skills) - set(SKILL_ORDER)
        if bad:
            raise ConfigError(f"unknown volume skill(s) {sorted(bad)}; choose from {list(SKILL_ORDER)}")
        self.model = model
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self.gate = Gate({**DEFAULT_GATE, **(gate or {})})
        self.skill_names = list(skills)
        self.prior: VolumePrior | None = None
        self.skills: list[VolumeSkill] = []
        self.genome: dict = {}           # the genome record whose values are in params (fit_volume_genome)
        self.genome_budget = 0           # the Powell budget of the genome fit
        self.labels: list[str] = []      # ids of the labelled slices it was fit on
        self.background: list[str] = []  # of those, the organ-free slices the genome scored
        self.n_labels = 0                # the label budget N they were drawn at
        self.label_volumes = 0           # how many train volumes those slices come from

    def fit(self, train_slices, support=None, support_embeddings=None, volumes=None) -> "VolumePipeline":
        """The volume prior from labelled train slices and the body frames of their ``volumes`` ({volume id: Volume
        or BodyFrame}); prototypes from the support slices and their embeddings."""
        self.prior = VolumePrior.fit(train_slices, volumes)
        support = list(support or [])
        if "multi_prototype" in self.skill_names and not support:
            raise DataError(None, "volume pipeline: the support set for multi-prototype is empty",
                            "pass labelled support slices and their embeddings, or drop the multi_prototype skill")
        self.skills = [MultiPrototype(support, support_embeddings or [], self.model) if s == MultiPrototype.name
                       else SKILLS[s]() for s in self.skill_names]
        return self

    def describe(self) -> pd.DataFrame:
        """The route: volume prior, skills and every parameter and gate weight."""
        p = self.prior
        rows = [{"what": "localizer", "value": "volume-prior box (normalised (x, y, z) extent of the labelled slices "
                 f"of {p.n_volumes} train volumes)", "fit": "train volumes"},
                {"what": "labels used", "value": f"{len(self.labels)} labelled slices: the N={self.n_labels} draw the "
                 f"trained networks train on, and {len(self.background)} of their organ-free slices (genome)",
                 "fit": ""},
                {"what": "prior range along the body's slices (0 = first, 1 = last)",
                 "value": f"{p.z_range[0]:.3f} - {p.z_range[1]:.3f}", "fit": "train volumes"},
                {"what": "organ length (mm; the longest of the organs not cut by the field of view)",
                 "value": f"{p.length[0]:.0f} - {p.length[1]:.0f}", "fit": "train volumes"},
                {"what": "organ grey level (rank among the body's voxels)",
                 "value": f"{p.fg_grey:.3f} ± {p.fg_grey_sd:.3f}", "fit": "train slices"},
                {"what": "skills (in order)", "value": " -> ".join(self.skill_names), "fit": ""}]
        fitted = self.genome.get("params", {})
        bounds = self.genome.get("bounds", {})

        def how(k):
            if k in fitted:
                return (f"genome [{bounds[k][0]:g}, {bounds[k][1]:g}] on {len(self.genome.get('volumes', []))} "
                        "train volume(s)")
            return "train volumes (dev)" if k == "box_margin" else "fixed"

        rows += [{"what": k, "value": f"{v:g}", "fit": how(k)} for k, v in self.params.items()]
        rows += [{"what": f"gate.{k}", "value": f"{v:g}", "fit": "fixed"} for k, v in self.gate.weights.items()]
        return pd.DataFrame(rows)

    def body(self, image: np.ndarray, spacing=None, frame_cache: dict | None = None) -> BodyFrame:
        """The body frame of an (H, W, D) volume with ``spacing`` (mm; row, col, slice; None: 1 mm), found from
        the image alone (kept in ``frame_cache`` under "body" when one is given)."""
        fr = None if frame_cache is None else frame_cache.get("body")
        if fr is None:
            fr = BodyFrame.of(image, 1.0 if spacing is None else float(spacing[2]))
            if frame_cache is not None:
                frame_cache["body"] = fr
        return fr

    def run(self, image: np.ndarray, embed, embed_crop=None, slices=None,
            frame_cache: dict | None = None, spacing=None) -> VolumeTrace:
        """Segment one (H, W, D) volume of ``spacing`` (mm; row, col, slice; None: 1 mm). ``embed(z)`` gives slice
        z's embedding, ``embed_crop(img)`` a zoomed crop's (pyramid); the volume's mask is never an argument.
        ``slices`` overrides the prior's range. ``frame_cache``: a dict kept by the caller across runs of this
        pipeline on this volume (genome evaluations), so that a decoder call already made for a slice is not made
        again."""
        if self.prior is None:
            raise ConfigError("VolumePipeline: call fit(train_slices, support, support_embeddings) first")
        if image.ndim != 3:
            raise DataError(None, f"expected an (H, W, D) volume, got {image.shape}", "pass Volume.image")
        depth = image.shape[2]
        body = self.body(image, spacing, frame_cache)
        zs = slices if slices is not None else self.prior.slice_range(body, int(self.params["range_margin"]))
        frames = {}
        t0 = time.perf_counter()
        for z in zs:
            fr = None if frame_cache is None else frame_cache.get(z)
            if fr is None or fr.vprior is not self.prior or fr.gate is not self.gate:
                rgb = np.repeat(image[:, :, z, None], 3, axis=2)
                fr = SliceFrame(image=rgb, embedding=embed(z), model=self.model, prior=self.prior.domain,
                                gate=self.gate, z=z, vprior=self.prior, body=body)
                if frame_cache is not None:
                    frame_cache[z] = fr
            else:                        # reused: forget this run's expectation and the mask-input decodes (keyed by id)
                fr.expect = None
                fr._memo = {k: v for k, v in fr._memo.items() if k[3] is None}
            frames[z] = fr
        t_emb = time.perf_counter() - t0
        cur = {}
        t0 = time.perf_counter()
        for z, fr in frames.items():
            box = grow_box(self.prior.box_at(z, body), self.params["box_margin"], fr.shape)
            cur[z] = fr.decode(box=box, origin=LOCALIZE)
        state = VolumeState(frames, cur, depth, self.prior, self.params, embed_crop, body)
        stages = [state.snapshot(LOCALIZE, fired=zs, seconds=time.perf_counter() - t0)]
        for skill in self.skills:
            t0 = time.perf_counter()
            fired, accepted = skill(state)
            stages.append(state.snapshot(skill.name, fired, accepted, time.perf_counter() - t0))
        traj = {k: v for k, v in (state.trajectory or {}).items() if k != "area"}
        flag = "" if state.trajectory else "no_trajectory"
        tr = VolumeTrace(slices=list(zs), stages=stages, decoder_calls=sum(f.decoder_calls for f in frames.values()),
                         trajectory=traj, flag=flag, encode_calls=state.encode_calls, embed_seconds=t_emb)
        return tr
