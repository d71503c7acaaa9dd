"""The training-free pipeline: GT-free localizer -> frozen decoder -> gated keep-best skills, one Route per domain.

    from frozenseg.pipeline import Pipeline, get_route, fit_genome
    p = Pipeline(get_route("cxr"), model).fit(support, support_embeddings)
    fit_genome(p, genome_cases, genome_embeddings)          # optional, <= 40 labelled train cases
    trace = p.run(image, embedding)                           # trace.stages: mask after each step

Every skill's proposal is kept by one rule (:func:`gates.keep_best`) under one gate (:class:`Gate`), and every
genome is fit by one cached bounded-Powell fit (:func:`genome.fit_powell`), for the 2D routes and for spleen's
volume pipeline (:mod:`.volume`) alike. The code notebooks run lives in :mod:`frozenseg.experiments`.
"""
from .core import LOCALIZE, Pipeline, Route, Stage, Trace  # noqa: F401
from .frame import Candidate, Frame  # noqa: F401
from .gates import CUES, OPTIONAL_CUES, Gate, cue_values, keep_best  # noqa: F401
from .genome import MAX_GENOME_LABELS, fit_genome, fit_powell  # noqa: F401
from .prior import DomainPrior  # noqa: F401
from .router import choose_route, get_route, load_routes, onboard  # noqa: F401
from .skills import SKILLS, Skill, make_skill  # noqa: F401
