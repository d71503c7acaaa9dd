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
from .repro import environment_line, seed_everything, silence_known_warnings

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
    _auto: dict = field(default_factory=dict, repr=False)

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
        """'phantom', 'real' or 'folder' for one domain (source 'auto': real where its dataset is present under the
        data root, phantom elsewhere)."""
        if domain in self.folders:
            return "folder"
        if self.source == "auto":
            from .data import real_available

            if domain not in self._auto:
                self._auto[domain] = "real" if real_available(domain) else "phantom"
            return self._auto[domain]
        return self.source

    def source_detail(self, domain: str) -> str:
        """What a table says about one domain's data: 'phantom', 'real sample (n = 51 images)', 'real sample, silver
        labels: ...)', 'real sample (n = 200 images, resized ...: not the official layout)', 'folder /path (n = ...)'.
        The counts appear once the domain's data is loaded."""
        kind = self.source_of(domain)
        if kind == "phantom":
            return "phantom"
        label = {"real": "real sample" if self.profile.name == "sample" else "real",
                 "folder": f"folder {self.folders.get(domain, '')}"}[kind]
        data = self._data.get(domain)
        if data is None:
            return label
        n = data.meta.get("n_records", len(data.train) + len(data.test))
        silver = ", silver labels: a model's output" if data.meta.get("labels") == "silver" else ""
        layout = f", {data.meta['layout']}" if data.meta.get("layout") else ""
        return f"{label} (n = {n} {'volumes' if data.volumes else 'images'}{silver}{layout})"

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
                         source=self.source_label, model=self.model_label)

    def source_label(self) -> str:
        """Data source per domain, e.g. 'phantom (isic, spleen, kvasir, cxr)' or 'isic: real sample (n = 51 images);
        spleen: ...; cxr: phantom' (what every table and figure of a notebook carries)."""
        details = {d: self.source_detail(d) for d in self.domains}
        if len(set(details.values())) == 1:
            return f"{next(iter(details.values()))} ({', '.join(self.domains)})"
        return "; ".join(f"{d}: {v}" for d, v in details.items())


def setup(profile: str = "cpu", seeds=(0,), domains=None, source: str | None = None, model: str | None = None,
          data_root: str | None = None, folders: dict | None = None, verbose: bool = True) -> Study:
    """Validate a notebook's parameters, seed everything, silence the known third-party warnings, print the
    environment line; returns a Study."""
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
    if source not in ("phantom", "real", "auto"):
        raise ConfigError(f"unknown data source {source!r}; use 'phantom', 'real' or 'auto' (real where present) "
                          "(or folders={name: path})")
    if data_root:
        os.environ["FROZENSEG_DATA"] = str(Path(data_root).expanduser().resolve())
    study = Study(profile=prof, seeds=seeds, domains=domains, source=source, model_key=model or prof.model,
                  folders=folders)
    from .models import set_threads

    set_threads()                # every core for torch, and freed memory kept (models.keep_freed_memory)
    seed_everything(seeds[0])
    silence_known_warnings()
    if verbose:
        print(environment_line(prof.name, study.source_label(), study.model_key, seeds))
        print(f"data root: {paths.data_root()} | cache: {study.cache.root}")
    return study
