"""GT-free localizers behind one dispatch: ``make_localizer(name, **params)``, then fit / locate."""
from __future__ import annotations

from ..errors import ConfigError
from .base import NO_DETECTION, OK, Localization, Localizer, check_support  # noqa: F401
from .amg import AMGLocalizer
from .cpg import CPGLocalizer
from .drawer import DrawerLocalizer, MissingTraceError  # noqa: F401
from .grid import FeatureGrid  # noqa: F401
from .prototype import PrototypeLocalizer
from .static_box import StaticBoxLocalizer

LOCALIZERS: dict[str, type[Localizer]] = {
    StaticBoxLocalizer.name: StaticBoxLocalizer,
    PrototypeLocalizer.name: PrototypeLocalizer,
    CPGLocalizer.name: CPGLocalizer,
    DrawerLocalizer.name: DrawerLocalizer,
    AMGLocalizer.name: AMGLocalizer,
}


def make_localizer(name: str, model=None, **params) -> Localizer:
    """A localizer by registry name with its parameters (unknown names or parameters raise ConfigError)."""
    if name not in LOCALIZERS:
        raise ConfigError(f"unknown localizer {name!r}; choose one of {sorted(LOCALIZERS)}")
    return LOCALIZERS[name](model=model, **params)
