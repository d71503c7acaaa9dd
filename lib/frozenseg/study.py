"""The notebooks' common context: profile, seeds, domains, data, model and the embedding cache in one object."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .cache import EmbeddingCache, MaskCache
from .config import DOMAIN_TITLES, DOMAINS, Profile, check_domain, get_profile
from .data import DomainData
from .errors import ConfigError
from .repro import environment_line, seed_everything

log = logging.getLogger(__name__)


@dataclass
class Study:
    """What a notebook needs after its parameters cell; build it with :func:`setup`."""

    profile: Profile
    seeds: list[int]
    domains: list[str]
    source: str
    model_key: str
    folders: dict[str, str] = field(default_factory=dict)
    cache: EmbeddingCache = field(default_factory=EmbeddingCache)
    masks: MaskCache = field(default_factory=MaskCache)
    _data: dict = field(default_factory=dict, repr=False)

    @functools.cached_property
    def model(self):
        """The promptable model, loaded once."""
        from .models import load_model, set_threads

        set_threads()
        return load_model(self.model_key)

    @property
    def model_label(self) -> str:
        """Human label of the model (says 'medical' where it is)."""
        from .models import MODELS

        return MODELS[self.model_key][0]

    def title(self, domain: str) -> str:
        """Display name of a domain."""
        return DOMAIN_TITLES.get(domain, domain)

    def source_of(self, domain: str) -> str:
        """'phantom', 'real' or 'folder' for one domain."""
        return "folder" if domain in self.folders else self.source

    def data(self, domain: str) -> DomainData:
        """Train pool and fixed test split of one domain (phantom, real or a user folder), loaded once."""
        from .data import load_domain

        if domain not in self._data:
            self._data[domain] = load_domain(domain, self.profile, source=self.source_of(domain),
                                             folder=self.folders.get(domain))
        return self._data[domain]

    def embeddings(self, cases, desc: str = "encoding"):
        """Cached embeddings of cases' images (each image is encoded once per model, ever)."""
        return self.cache.get_many(self.model, [c.image for c in cases], desc=desc)

    def artifacts(self, notebook: str):
        """An Artifacts recorder stamped with this study's provenance."""
        from .report import Artifacts

        return Artifacts(notebook=notebook, profile=self.profile.name, seeds=list(self.seeds),
                         source=self.source_label(), model=self.model_label)

    def source_label(self) -> str:
        """Data source(s) of this run, e.g. 'phantom' or 'real + folder(mydomain)'."""
        kinds = sorted({self.source_of(d) for d in self.domains})
        return " + ".join(k if k != "folder" else f"folder({', '.join(self.folders)})" for k in kinds)


def setup(profile: str = "cpu", seeds=(0,), domains=None, source: str | None = None, model: str | None = None,
          data_root: str | None = None, folders: dict | None = None, verbose: bool = True) -> Study:
    """Validate a notebook's parameters, seed everything, print the environment line; returns a Study."""
    import os

    prof = get_profile(profile)
    folders = {k: str(Path(v).expanduser()) for k, v in (folders or {}).items()}
    domains = list(domains) if domains else list(DOMAINS) + list(folders)
    for d in domains:
        check_domain(d, extra=tuple(folders))
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else str(seeds).split())]
    if not seeds:
        raise ConfigError("no seeds given; pass e.g. SEEDS=\"0 1 2\"")
    source = source or prof.source
    if source not in ("phantom", "real"):
        raise ConfigError(f"unknown data source {source!r}; use 'phantom' or 'real' (or folders={{name: path}})")
    if data_root:
        os.environ["FROZENSEG_DATA"] = str(Path(data_root).expanduser().resolve())
    study = Study(profile=prof, seeds=seeds, domains=domains, source=source, model_key=model or prof.model,
                  folders=folders)
    seed_everything(seeds[0])
    if verbose:
        print(environment_line(prof.name, study.source_label(), study.model_key, seeds))
        print(f"data root: {paths.data_root()} | cache: {study.cache.root}")
    return study
