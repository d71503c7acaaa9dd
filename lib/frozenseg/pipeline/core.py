"""A training-free pipeline: GT-free localizer -> frozen decoder -> gated skills, configured by a Route.

``Pipeline(route, model).fit(support, support_embeddings)`` learns the prior, the localizer and (optionally) the
genome from a few labelled train cases; ``run(image, embedding)`` returns a Trace whose stages are the mask after
the localizer and after each skill, so the skill-by-skill ablation is read off one run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..localizers import make_localizer
from ..localizers.base import grow_box
from . import gates
from .frame import Candidate, Frame
from .gates import Gate
from .prior import DomainPrior
from .skills import make_skill

LOCALIZE = "localize"


@dataclass
class Route:
    """One domain's topology: localizer (name + params), ordered skills, gate weights, genome bounds, params."""

    domain: str
    localizer: dict
    skills: list[str] = field(default_factory=list)
    gate: dict = field(default_factory=dict)
    genome: dict = field(default_factory=dict)       # parameter -> [low, high], fit on labelled train cases
    params: dict = field(default_factory=dict)       # fixed parameter values (genome values override them)
    note: str = ""

    def describe(self) -> dict:
        """Flat description for provenance tables."""
        return {"domain": self.domain, "localizer": self.localizer.get("name"), "skills": " -> ".join(self.skills),
                "genome": ", ".join(self.genome), "note": self.note}


@dataclass
class Stage:
    """The mask after one pipeline step, with whether the step fired and whether its proposal was kept."""

    name: str
    mask: np.ndarray
    gate: float
    fired: bool = True
    accepted: bool = True
    origin: str = ""
    proposals: list = field(default_factory=list)   # (origin, mask, gate) of every non-empty proposal


@dataclass
class Trace:
    """Everything one image went through: localization record, stages in order, decoder calls."""

    localization: dict
    stages: list[Stage]
    decoder_calls: int
    flag: str = ""

    @property
    def final(self) -> np.ndarray:
        """The deployed mask (the last stage)."""
        return self.stages[-1].mask


class Pipeline:
    """Localizer + frozen decoder + keep-best skills for one domain."""

    def __init__(self, route: Route, model, params: dict | None = None):
        self.route = route
        self.model = model
        self.params = {**route.params, **(params or {})}
        self.skills = [make_skill(s) for s in route.skills]
        self.prior: DomainPrior | None = None
        self.localizer = None
        self.support: list = []             # the labelled cases it was fit on, and their embeddings
        self.support_embeddings: list = []

    @property
    def gate(self) -> Gate:
        """The domain's gate with genome-set weights (``gate.<cue>`` parameters) over the route's weights."""
        w = dict(self.route.gate) or None
        g = Gate(w) if w else Gate()
        for k, v in self.params.items():
            if k.startswith("gate."):
                g.weights[k[5:]] = float(v)
        return g

    def fit(self, support, support_embeddings) -> "Pipeline":
        """Prior and localizer from the labelled support cases (and their cached embeddings)."""
        self.support, self.support_embeddings = list(support), list(support_embeddings or [])
        self.prior = DomainPrior.fit(support)
        loc = dict(self.route.localizer)
        self.localizer = make_localizer(loc.pop("name"), model=self.model, **loc).fit(support, support_embeddings)
        apply_localizer_params(self, self.params)
        return self

    def frame(self, image, embedding) -> Frame:
        """A Frame for one image under this pipeline's prior and gate."""
        return Frame(image=image, embedding=embedding, model=self.model, prior=self.prior, gate=self.gate)

    def localize(self, frame: Frame, loc=None) -> tuple[dict, np.ndarray | None, str]:
        """(localization record, box, flag); the atlas box stands in, flagged, when the localizer finds nothing.
        ``loc`` reuses an earlier ``localizer.locate`` answer (the genome fit grows it under new margins)."""
        loc = loc if loc is not None else self.localizer.locate(frame.image, frame.embedding)
        frame.localization = loc
        rec = loc.record()
        if loc.box is not None:
            return rec, grow_box(loc.box, float(self.params.get("box_margin", 0.0)), frame.shape), ""
        fallback = self.prior.atlas_box(frame.shape)
        return rec, fallback, "localizer_fallback_atlas" if fallback is not None else "no_detection"

    def run(self, image, embedding, frame: Frame | None = None, localized=None) -> Trace:
        """Localize, decode, then apply each skill under keep-best; ``localized`` reuses a localize() result."""
        frame = frame or self.frame(image, embedding)
        rec, box, flag = localized or self.localize(frame)
        loc = frame.localization if not flag else None
        if box is None:
            cur = Candidate(mask=np.zeros(frame.shape, bool), origin="no_detection")
        elif loc is not None and loc.mask is not None:     # the localizer decoded its own mask
            cur = Candidate(mask=np.asarray(loc.mask, bool), box=box, origin=LOCALIZE)
        else:
            cur = frame.decode(box=box, points=loc.points if loc is not None else None,
                               labels=loc.point_labels if loc is not None else None, origin=LOCALIZE)
        stages = [Stage(LOCALIZE, cur.mask, frame.gate_value(cur), origin=cur.origin)]
        params = self.params
        for skill in self.skills:
            fired = skill.fires(frame, cur, params)
            accepted, proposed = False, []
            if fired and not skill.gated:      # a deciding skill's choice replaces the mask, no gate asked
                chosen = skill.propose(frame, cur, params)
                accepted = bool(chosen) and not np.array_equal(chosen[0].mask, cur.mask)
                cur = chosen[0] if chosen else cur
                proposed = [(c.origin, c.mask, frame.gate_value(c)) for c in chosen]
            elif fired:
                cur, accepted, scored = gates.keep_best(cur, skill.propose(frame, cur, params), frame.gate_value,
                                                        params.get("min_gain", 1e-4))
                proposed = [(c.origin, c.mask, g) for c, g in scored]
            stages.append(Stage(skill.name, cur.mask, frame.gate_value(cur), fired, accepted, cur.origin, proposed))
        return Trace(localization=rec, stages=stages, decoder_calls=frame.decoder_calls, flag=flag)


def apply_localizer_params(pipeline: Pipeline, values: dict) -> bool:
    """Copy ``localizer.<param>`` values (route or genome) into the fitted localizer; True if any was given."""
    loc = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("localizer.")}
    for k, v in loc.items():
        if k not in pipeline.localizer.params:
            raise ConfigError(f"genome parameter localizer.{k}: {pipeline.localizer.name} has no parameter {k!r}; "
                              f"valid: {sorted(pipeline.localizer.params)}")
        pipeline.localizer.params[k] = v
    return bool(loc)
