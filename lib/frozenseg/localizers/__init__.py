"""GT-free localizers behind one dispatch: ``make_localizer(name, **params)``, then fit / locate."""
from __future__ import annotations

from ..errors import ConfigError
from .base import NO_DETECTION, OK, Localization, Localizer, check_support  # noqa: F401
from .amg import AMGLocalizer, resolve_spaces
from .concept import ConceptLocalizer
from .cpg import CPGLocalizer
from .drawer import DrawerLocalizer, MissingTraceError  # noqa: F401
from .features import resolved_space
from .grid import FeatureGrid  # noqa: F401
from .persam import PerSAMLocalizer
from .prototype import PrototypeLocalizer
from .selfprompt import SelfPromptLocalizer
from .static_box import StaticBoxLocalizer

LOCALIZERS: dict[str, type[Localizer]] = {
    StaticBoxLocalizer.name: StaticBoxLocalizer,
    PrototypeLocalizer.name: PrototypeLocalizer,
    CPGLocalizer.name: CPGLocalizer,
    DrawerLocalizer.name: DrawerLocalizer,
    AMGLocalizer.name: AMGLocalizer,
    ConceptLocalizer.name: ConceptLocalizer,
    PerSAMLocalizer.name: PerSAMLocalizer,          # the few-shot SAM peers (routes persam, selfprompt)
    SelfPromptLocalizer.name: SelfPromptLocalizer,
}


def make_localizer(name: str, model=None, **params) -> Localizer:
    """A localizer by registry name with its parameters (unknown names or parameters raise ConfigError)."""
    if name not in LOCALIZERS:
        raise ConfigError(f"unknown localizer {name!r}; choose one of {sorted(LOCALIZERS)}")
    return LOCALIZERS[name](model=model, **params)


def feature_key(spec: dict):
    """The feature space(s) a localizer spec ({'name': ..., params}) runs in here and now, for cache keys of fits:
    ``features='auto'`` resolved (DINOv2 named by its weights folder), the localizer's default when the spec sets
    none; None for a localizer without feature spaces."""
    cls = LOCALIZERS.get(spec.get("name"))
    if cls is None or "features" not in cls.defaults:
        return None
    feats = {**cls.defaults, **spec}["features"]
    return resolved_space(resolve_spaces(feats) if cls is AMGLocalizer else feats)
