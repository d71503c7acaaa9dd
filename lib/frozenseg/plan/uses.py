"""Which notebooks and report sections read each dataset and weight of the manifest, and what a run does without
it (``make data-status``).

A dataset's notebooks follow from the code: its domain (``frozenseg.data.loaders.DATASET_KEYS`` and
``EXTRA_KEYS``) and the domains each notebook reads (its ``DOMAIN`` constant, else every domain when it loops over
``study.domains``), unless the entry names them. A weight's notebooks, and every entry's effect, are declared once
beside the entry, in its ``without`` field of data_manifest.yaml.
"""
from __future__ import annotations

import re
from pathlib import Path

from .. import paths
from ..config import DOMAINS

DOMAIN_CONSTANT = re.compile(r"^DOMAIN\s*=\s*[\"'](\w+)[\"']", re.M)
ALL_DOMAINS = re.compile(r"\bstudy\.domains\b")


def notebook_domains() -> dict[str, tuple[str, ...]]:
    """Notebook -> the study domains it reads, from its source: its ``DOMAIN`` constant (02-05), else all four when
    it loops over ``study.domains``, else none."""
    out = {}
    for path in sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.py")):     # the runner's notebooks
        name, src = path.stem, path.read_text(encoding="utf-8")
        own = DOMAIN_CONSTANT.findall(src)
        out[name] = tuple(own) if own else (DOMAINS if ALL_DOMAINS.search(src) else ())
    return out


def entry_domain(key: str) -> str | None:
    """The study domain a dataset entry feeds (None for weights or an entry no loader reads)."""
    from ..data.loaders import DATASET_KEYS, EXTRA_KEYS

    for table in (DATASET_KEYS, EXTRA_KEYS):
        for domain, keys in table.items():
            if key in keys:
                return domain
    return None


def entry_notebooks(entry, domains: dict[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """Notebooks that read ``entry``: its ``without.notebooks`` where declared (every weight; a dataset only one
    notebook reads, e.g. the MR spleen sample), else a dataset's from its domain."""
    if entry.kind == "dataset" and "notebooks" not in entry.without:
        domain = entry_domain(entry.key)
        domains = notebook_domains() if domains is None else domains
        return tuple(nb for nb, ds in domains.items() if domain in ds)
    return tuple(entry.without.get("notebooks", ()))


def section_of() -> dict[str, tuple[int, str]]:
    """Notebook -> (number, title) of the report section it publishes into."""
    from ..report import SECTIONS

    return {nb: (s.number, s.title) for s in SECTIONS for nb in s.notebooks}


def effects(root: str | Path | None = None, manifest=None, only_missing: bool = True) -> list[dict]:
    """One row per (missing) entry: key, kind, present, effect, note, notebooks and the sections they publish in."""
    from ..manifest import load_manifest, status

    manifest = load_manifest() if manifest is None else manifest
    domains, sections = notebook_domains(), section_of()
    rows = []
    for r in status(root, manifest):
        if only_missing and r["present"]:
            continue
        entry = manifest[r["key"]]
        nbs = entry_notebooks(entry, domains)
        rows.append({**r, "effect": entry.without.get("effect", "undeclared"),
                     "note": entry.without.get("note", "no `without` field in data_manifest.yaml"),
                     "notebooks": nbs, "sections": sorted({sections[nb] for nb in nbs if nb in sections})})
    return rows


def status_lines(root: str | Path | None = None, manifest=None) -> list[str]:
    """``make data-status``: what is present under the data root, then each missing entry with what it skips or
    degrades and where."""
    from ..manifest import status

    rows = status(root, manifest)
    width = max(len(r["key"]) for r in rows)
    lines = [f"data root: {Path(root).expanduser().resolve() if root else paths.data_root()}"]
    lines += [f"  {r['key']:<{width}}  {r['kind']:<8} {'present' if r['present'] else 'missing':<8} {r['path']}"
              for r in rows]
    missing = effects(root, manifest)
    if not missing:
        return lines + ["every dataset and weight of data_manifest.yaml is present"]
    lines.append("without the missing ones (declared under `without:` in data_manifest.yaml):")
    for m in missing:
        lines.append(f"  {m['key']} ({m['effect']}): {m['note']}")
        where = ", ".join(m["notebooks"]) or "no notebook by default"
        secs = ", ".join(f"{n} {title}" for n, title in m["sections"])
        lines.append(f"      notebooks: {where}" + (f"; report sections: {secs}" if secs else ""))
    return lines
