"""Manifest entries: parsing ``data_manifest.yaml``, checksums, and where each entry lives and whether it is present."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import paths
from ..errors import ChecksumError, ConfigError, MissingDatasetError

FORMATS = ("zip", "tar", "file", "hf_repo")
KINDS = {"datasets": "dataset", "weights": "weights"}
REQUIRED = ("url", "license", "sha256", "format", "target", "layout", "how_to_get")
OPTIONAL = ("title", "homepage", "md5", "member", "extra", "manual", "default", "bundled", "files", "labels", "groups",
            "without")
EFFECTS = ("fails", "skips", "degrades")   # what a run does without an entry (its ``without`` field)
LABELS = ("manual", "silver")
PART_KEYS = {"url", "sha256", "md5", "format", "member", "manual"}
CHUNK = 1 << 20


@dataclass(frozen=True)
class Part:
    """One downloadable file of an entry."""

    url: str
    sha256: str | None
    format: str
    md5: str | None = None
    member: str | None = None
    manual: bool = False


@dataclass(frozen=True)
class Entry:
    """One dataset or weight declared in the manifest."""

    key: str
    kind: str                      # "dataset" or "weights"
    url: str
    license: str
    sha256: str | None
    format: str
    target: str
    layout: tuple[str, ...]
    how_to_get: str
    title: str = ""
    homepage: str | None = None
    md5: str | None = None
    member: str | None = None
    manual: bool = False
    default: bool = False
    bundled: str | None = None
    files: tuple[str, ...] = ()
    extra: tuple[Part, ...] = field(default_factory=tuple)
    labels: str = "manual"         # "silver": the masks are a model's output, said wherever they are used
    groups: dict = field(default_factory=dict)   # case or volume id -> scan/patient group (kept on one side of a split)
    without: dict = field(default_factory=dict)  # effect, note (and notebooks, for weights) when the entry is missing

    def parts(self) -> list[Part]:
        """The primary download followed by the extra ones."""
        main = Part(self.url, self.sha256, self.format, self.md5, self.member, self.manual)
        return [main, *self.extra]


# ----------------------------------------------------------------------------- loading + validation

def load_manifest(path: str | Path = paths.MANIFEST) -> dict[str, Entry]:
    """Read and validate the manifest; a malformed entry raises ConfigError naming it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the data manifest ({exc}); restore it from git") from exc
    if not isinstance(raw, dict) or not any(sec in raw for sec in KINDS):
        raise ConfigError(f"{path}: the manifest needs a 'datasets:' and/or 'weights:' mapping")
    entries: dict[str, Entry] = {}
    for section, kind in KINDS.items():
        block = raw.get(section) or {}
        if not isinstance(block, dict):
            raise ConfigError(f"{path}: '{section}:' must map keys to entries")
        for key, spec in block.items():
            if key in entries:
                raise ConfigError(f"{path}: key {key!r} is declared twice; keys must be unique")
            entries[key] = _entry(path, key, kind, spec)
    return entries


def _entry(path: Path, key: str, kind: str, spec: object) -> Entry:
    """Build one Entry from its YAML mapping, or raise ConfigError naming the field at fault."""
    where = f"{path}: entry {key!r}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping of fields")
    missing = [k for k in REQUIRED if k not in spec]
    unknown = sorted(set(spec) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        raise ConfigError(f"{where}: missing fields {missing}, unknown fields {unknown}; "
                          f"required are {list(REQUIRED)}, optional {list(OPTIONAL)}")
    for name in ("url", "license", "how_to_get", "target"):
        if not isinstance(spec[name], str) or not spec[name].strip():
            raise ConfigError(f"{where}: '{name}' must be a non-empty string")
    _check_part(where, spec)
    _check_target(where, spec["target"])
    layout = spec["layout"]
    if not isinstance(layout, list) or not layout or not all(isinstance(g, str) and g for g in layout):
        raise ConfigError(f"{where}: 'layout' must be a non-empty list of glob strings")
    extra = spec.get("extra") or []
    if not isinstance(extra, list):
        raise ConfigError(f"{where}: 'extra' must be a list of downloads")
    parts = tuple(_extra_part(f"{where} extra[{i}]", p) for i, p in enumerate(extra))
    files = spec.get("files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"{where}: 'files' must be a list of file names")
    labels, groups = spec.get("labels", "manual"), spec.get("groups") or {}
    if labels not in LABELS:
        raise ConfigError(f"{where}: 'labels' must be one of {list(LABELS)}, got {labels!r}")
    if not isinstance(groups, dict):
        raise ConfigError(f"{where}: 'groups' must map case or volume ids to group names")
    return Entry(
        without=_without(where, spec.get("without")), labels=labels, groups={str(k): str(v) for k, v in groups.items()},
        key=key, kind=kind, url=spec["url"], license=spec["license"], sha256=spec["sha256"],
        format=spec["format"], target=spec["target"], layout=tuple(layout),
        how_to_get=" ".join(spec["how_to_get"].split()), title=spec.get("title") or key,
        homepage=spec.get("homepage"), md5=spec.get("md5"), member=spec.get("member"),
        manual=bool(spec.get("manual", False)), default=bool(spec.get("default", False)),
        bundled=spec.get("bundled"), files=tuple(files), extra=parts,
    )


def _without(where: str, spec: object) -> dict:
    """The ``without`` field: {effect, note[, notebooks]}; {} when absent."""
    if spec is None:
        return {}
    ok = (isinstance(spec, dict) and spec.get("effect") in EFFECTS and isinstance(spec.get("note"), str)
          and set(spec) <= {"effect", "note", "notebooks"}
          and all(isinstance(n, str) for n in spec.get("notebooks") or []))
    if not ok:
        raise ConfigError(f"{where}: 'without' must map effect (one of {list(EFFECTS)}), note (text) and optionally "
                          f"notebooks (a list of notebook names), got {spec!r}")
    out = {"effect": spec["effect"], "note": " ".join(spec["note"].split())}
    if "notebooks" in spec:
        out["notebooks"] = tuple(spec["notebooks"] or ())
    return out


def _check_part(where: str, spec: dict) -> None:
    """Validate the download fields shared by an entry and its extra parts."""
    if spec.get("format") not in FORMATS:
        raise ConfigError(f"{where}: 'format' must be one of {list(FORMATS)}, got {spec.get('format')!r}")
    sha = spec.get("sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise ConfigError(f"{where}: 'sha256' must be 64 lower-case hex digits or null, got {sha!r}")
    md5 = spec.get("md5")
    if md5 is not None and not (isinstance(md5, str) and re.fullmatch(r"[0-9a-f]{32}", md5)):
        raise ConfigError(f"{where}: 'md5' must be 32 lower-case hex digits or null, got {md5!r}")


def _check_target(where: str, target: str) -> None:
    """A target must stay inside the data root."""
    p = Path(target)
    if p.is_absolute() or ".." in p.parts:
        raise ConfigError(f"{where}: 'target' must be a relative path inside the data root, got {target!r}")


def _extra_part(where: str, spec: object) -> Part:
    """Build one extra download Part."""
    if not isinstance(spec, dict) or "url" not in spec or "sha256" not in spec or "format" not in spec:
        raise ConfigError(f"{where}: needs 'url', 'sha256' (or null) and 'format'")
    unknown = sorted(set(spec) - PART_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown fields {unknown}; allowed {sorted(PART_KEYS)}")
    _check_part(where, spec)
    return Part(spec["url"], spec["sha256"], spec["format"], spec.get("md5"), spec.get("member"),
                bool(spec.get("manual", False)))


def get_entry(key: str, manifest: dict[str, Entry] | None = None) -> Entry:
    """Entry of ``key``; an unknown key raises ConfigError listing the known ones."""
    manifest = load_manifest() if manifest is None else manifest
    if key not in manifest:
        raise ConfigError(f"unknown manifest key {key!r}; known keys: {sorted(manifest)} "
                          f"(declared in {paths.MANIFEST.name})")
    return manifest[key]


# ----------------------------------------------------------------------------- checksums

def _digest(path: str | Path, algo: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, read in chunks (large checkpoints never load into memory)."""
    return _digest(path, "sha256")


def verify(path: str | Path, sha256: str | None, md5: str | None = None) -> None:
    """Raise ChecksumError unless ``path`` has the declared sha256 (or md5 where only that is known)."""
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want is None:
            continue
        got = _digest(path, algo)
        if got != want.lower():
            raise ChecksumError(
                path, f"{algo} mismatch: expected {want}, actual {got} (a corrupt, partial or different file)",
                f"delete {path} and fetch it again (python -m frozenseg.manifest fetch), "
                "or download it by hand from the manifest's url")
        return


# ----------------------------------------------------------------------------- presence

def target_path(entry: Entry, root: str | Path | None = None) -> Path:
    """Where ``entry`` lives under the data root."""
    return (Path(root) if root is not None else paths.data_root()) / entry.target


def layout_missing(entry: Entry, folder: str | Path) -> list[str]:
    """Layout globs of ``entry`` that match nothing in ``folder`` (empty list: layout present)."""
    folder = Path(folder)
    if entry.format == "file":
        return [] if folder.is_file() else [folder.name]
    if not folder.is_dir():
        return list(entry.layout)
    return [g for g in entry.layout if next(iter(folder.glob(g)), None) is None]


def bundled_path(entry: Entry) -> Path | None:
    """Path of a weight file shipped inside an installed package (found without importing it)."""
    if not entry.bundled:
        return None
    spec = importlib.util.find_spec(entry.bundled.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        hits = sorted(Path(loc).rglob(entry.layout[0]))
        if hits:
            return hits[0]
    return None


def missing_error(entry: Entry, folder: Path, missing: list[str] | None = None) -> MissingDatasetError:
    """The error that names the entry, the folder searched, where to get it and FROZENSEG_DATA."""
    what = f"{entry.kind} {entry.key!r} ({entry.title})"
    miss = f"; nothing matches {missing[:3]}" if missing else ""
    env = os.environ.get("FROZENSEG_DATA")
    env_note = f"FROZENSEG_DATA={env}" if env else f"FROZENSEG_DATA is unset, so the data root is {paths.data_root()}"
    auto = ("it has no direct download link, so fetch it by hand" if entry.manual
            else f"`python -m frozenseg.manifest fetch {entry.key}` tries to download it")
    return MissingDatasetError(
        folder, f"{what} not found{miss}",
        f"{entry.how_to_get} Source: {entry.url}. Or point FROZENSEG_DATA at the folder that holds "
        f"{entry.target} ({env_note}); {auto}")


def require(key: str, folder: str | Path, manifest: dict[str, Entry] | None = None) -> Path:
    """Return ``folder`` if ``key``'s layout is present there, else raise MissingDatasetError."""
    entry = get_entry(key, manifest)
    folder = Path(folder)
    missing = layout_missing(entry, folder)
    if missing:
        raise missing_error(entry, folder, missing)
    return folder


def locate(key: str, root: str | Path | None = None, manifest: dict[str, Entry] | None = None) -> Path:
    """Path of ``key`` under the data root when its layout is present, else MissingDatasetError."""
    entry = get_entry(key, manifest)
    folder = target_path(entry, root)
    missing = layout_missing(entry, folder)
    if not missing:
        return folder
    bundled = bundled_path(entry)
    if bundled is not None:
        return bundled
    raise missing_error(entry, folder, missing)


def status(root: str | Path | None = None, manifest: dict[str, Entry] | None = None) -> list[dict]:
    """One row per entry: key, kind, present, path (no hashing, so it is fast)."""
    manifest = load_manifest() if manifest is None else manifest
    rows = []
    for key, entry in manifest.items():
        try:
            path, present = locate(key, root, manifest), True
        except MissingDatasetError:
            path, present = target_path(entry, root), False
        rows.append({"key": key, "kind": entry.kind, "present": present, "path": str(path)})
    return rows
