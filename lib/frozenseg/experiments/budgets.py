"""What a pipeline run at budget N is given: the profile's pipeline sizes, the budgets a domain can hold, and the
labelled cases (supports and genome cases) drawn from the same seeded N-label draw the trained networks train on."""
from __future__ import annotations

from ..data import budgets_for
from ..data.splits import subsample_train
from ..pipeline.genome import MAX_GENOME_LABELS

DEFAULTS = {"n_support": 10, "n_genome": 20, "genome_budget": 30, "n_test": None,
            "spleen_genome_budget": 30, "spleen_genome_volumes": 3}


def settings(profile) -> dict:
    """Pipeline sizes of a profile (its ``pipeline`` dict over DEFAULTS)."""
    return {**DEFAULTS, **(profile.pipeline or {})}


# The code a genome fit depends on: the pipeline's runtime pieces (files of frozenseg.pipeline) and every localizer
# (experiment and analysis modules are left out, so editing them does not force a refit).
GENOME_CODE = ("core.py", "frame.py", "gates.py", "genome.py", "prior.py", "skills.py", "routes.yaml")


def budgets(profile, data=None) -> tuple[int, ...]:
    """The label budgets N the pipeline runs at: the profile's (the trained networks' and the tuned decoder's); with
    a domain's ``data``, those its train pool can hold."""
    ns = tuple(int(n) for n in (settings(profile).get("budgets") or profile.budgets))
    return budgets_for(data, ns) if data is not None else ns


def label_sets(train, n_labels: int, seed: int, s: dict) -> tuple[list, list]:
    """(support, genome cases) at budget N: both come from the same seeded N-label draw the trained networks train
    on (``subsample_train(train, N, seed)``; nested prefixes of it, so every label lies inside that draw), capped
    at the route's sizes (``n_support``; ``n_genome`` and the study's 40 genome labels)."""
    n = min(int(n_labels), len(train))
    support = subsample_train(train, min(s["n_support"], n), seed)
    gcases = subsample_train(train, min(s["n_genome"], MAX_GENOME_LABELS, n), seed)
    return support, gcases
