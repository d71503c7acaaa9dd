"""The data manifest: where each real dataset and weight file comes from, where it lives, how to check it.

``data_manifest.yaml`` declares every entry (url, licence, sha256, format, target, layout, how_to_get).
Paths are relative to the data root (``FROZENSEG_DATA``, see :func:`frozenseg.paths.data_root`).

CLI (used by ``make data``)::

    python -m frozenseg.manifest status            # what is present
    python -m frozenseg.manifest fetch [KEY ...]   # download, verify, extract (default entries if no KEY)
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import paths
from .errors import ChecksumError, ConfigError, DataError, MissingDatasetError

FORMATS = ("zip", "tar", "file", "hf_repo")
KINDS = {"datasets": "dataset", "weights": "weights"}
REQUIRED = ("url", "license", "sha256", "format", "target", "layout", "how_to_get")
OPTIONAL = ("title", "homepage", "md5", "member", "extra", "manual", "default", "bundled", "files", "labels", "groups")
LABELS = ("manual", "silver")
PART_KEYS = {"url", "sha256", "md5", "format", "member", "manual"}
CHUNK = 1 << 20
TIMEOUT_S = 60


class FetchError(DataError):
    """A download failed (network, HTTP or a licence gate)."""


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
        labels=labels, groups={str(k): str(v) for k, v in groups.items()},
        key=key, kind=kind, url=spec["url"], license=spec["license"], sha256=spec["sha256"],
        format=spec["format"], target=spec["target"], layout=tuple(layout),
        how_to_get=" ".join(spec["how_to_get"].split()), title=spec.get("title") or key,
        homepage=spec.get("homepage"), md5=spec.get("md5"), member=spec.get("member"),
        manual=bool(spec.get("manual", False)), default=bool(spec.get("default", False)),
        bundled=spec.get("bundled"), files=tuple(files), extra=parts,
    )


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


# ----------------------------------------------------------------------------- fetching

def fetch(key: str, root: str | Path | None = None, manifest: dict[str, Entry] | None = None) -> Path:
    """Download, verify and extract ``key`` into the data root; skip what is present and verified."""
    entry = get_entry(key, manifest)
    dest = target_path(entry, root)
    if entry.bundled:
        return _fetch_bundled(entry, dest)
    if not layout_missing(entry, dest):
        if entry.format == "file":
            verify(dest, entry.sha256, entry.md5)
        return dest
    if entry.format == "hf_repo":
        _fetch_hf_repo(entry, dest)
    else:
        for part in entry.parts():
            if not part.manual:
                _fetch_part(entry, part, dest)
    missing = layout_missing(entry, dest)
    if missing:
        raise missing_error(entry, dest, missing)
    return dest


def _fetch_bundled(entry: Entry, dest: Path) -> Path:
    """Bundled weights: nothing to download, only check the packaged file."""
    path = dest if dest.is_file() else bundled_path(entry)
    if path is None:
        raise missing_error(entry, dest)
    verify(path, entry.sha256, entry.md5)
    return path


def _fetch_part(entry: Entry, part: Part, dest: Path) -> None:
    """Fetch one file or archive of an entry."""
    if part.format == "file":
        download(part.url, dest, part.sha256, part.md5, desc=entry.key)
        return
    if part.member and (dest / part.member).exists():
        return
    archive = dest.parent / ".downloads" / _url_name(part.url)
    if archive.exists():
        try:
            verify(archive, part.sha256, part.md5)
        except ChecksumError:
            archive.unlink()
    if not archive.exists():
        download(part.url, archive, part.sha256, part.md5, desc=entry.key)
    extract(archive, dest, part.format)
    archive.unlink()


def _fetch_hf_repo(entry: Entry, dest: Path) -> None:
    """Fetch the listed files of a transformers-format hub folder, then move the folder into place."""
    if entry.manual or not entry.files:
        raise missing_error(entry, dest, layout_missing(entry, dest))
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=_mkdir(dest.parent)))
    try:
        for name in entry.files:
            download(f"{entry.url.rstrip('/')}/resolve/main/{name}", tmp / name, None, desc=f"{entry.key}/{name}")
        _replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _url_name(url: str) -> str:
    """File name at the end of a URL."""
    return Path(urllib.parse.urlparse(url).path).name or "download"


def _mkdir(path: Path) -> Path:
    """Create ``path`` (and parents) and return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def download(url: str, dest: str | Path, sha256: str | None, md5: str | None = None, desc: str = "") -> Path:
    """Stream ``url`` into ``dest.part`` with a progress bar, verify, then rename onto ``dest``."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    part = _mkdir(dest.parent) / f".{dest.name}.part"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc or dest.name, leave=False) as bar:
                for chunk in iter(lambda: resp.read(CHUNK), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        _verify_download(part, dest, url, sha256, md5)
        os.replace(part, dest)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise FetchError(dest, f"download of {url} failed ({exc})",
                         f"download it by hand (browser, or another machine) and place it at {dest}; "
                         "FROZENSEG_DATA sets the data root") from exc
    finally:
        part.unlink(missing_ok=True)
    return dest


def _verify_download(part: Path, dest: Path, url: str, sha256: str | None, md5: str | None) -> None:
    """Check a finished download; a mismatch names the URL and the target, not the temporary file."""
    try:
        verify(part, sha256, md5)
    except ChecksumError as exc:
        raise ChecksumError(dest, f"the file downloaded from {url} failed its check: {exc.problem}",
                            f"nothing was written to {dest}; fetch again, and if it fails again the "
                            "server's file differs from the manifest: download it by hand and compare") from exc


def extract(archive: str | Path, dest: str | Path, fmt: str) -> Path:
    """Extract a zip/tar into a temporary folder, then move each top-level item into ``dest``."""
    archive, dest = Path(archive), Path(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extract", dir=_mkdir(dest.parent)))
    try:
        try:
            _extract_all(archive, tmp, fmt)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(archive, f"cannot extract the {fmt} archive ({exc})",
                            f"delete {archive} and fetch it again") from exc
        _mkdir(dest)
        for item in sorted(tmp.iterdir()):
            _replace_path(item, dest / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _extract_all(archive: Path, out: Path, fmt: str) -> None:
    """Extract every member, refusing paths that would escape ``out``."""
    if fmt == "zip":
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                _check_member(archive, out, name)
            zf.extractall(out)
        return
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            _check_member(archive, out, member.name)
        if hasattr(tarfile, "data_filter"):
            tf.extractall(out, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tf.extractall(out)


def _check_member(archive: Path, out: Path, name: str) -> None:
    """Raise DataError for an archive member with an absolute path or '..'."""
    target = (out / name).resolve()
    if not str(target).startswith(str(out.resolve())):
        raise DataError(archive, f"archive member {name!r} would be written outside the target folder",
                        "do not use this archive; download it again from the manifest's url")


def _replace_path(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``, replacing whatever was there."""
    if dst.is_dir() and not dst.is_symlink():
        _replace_dir(src, dst)
        return
    os.replace(src, dst)


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename folder ``src`` onto ``dst``; an existing ``dst`` is moved aside first, then removed."""
    _mkdir(dst.parent)
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- CLI

def _print_status(root: str | None) -> int:
    """Print the status table; exit code 0."""
    rows = status(root)
    width = max(len(r["key"]) for r in rows)
    print(f"data root: {Path(root) if root else paths.data_root()}")
    for r in rows:
        mark = "present" if r["present"] else "missing"
        print(f"  {r['key']:<{width}}  {r['kind']:<8} {mark:<8} {r['path']}")
    return 0


def _fetch_many(keys: list[str], root: str | None) -> int:
    """Fetch each key, report failures at the end; exit code 1 if any failed."""
    manifest = load_manifest()
    keys = keys or [k for k, e in manifest.items() if e.default]
    failed = []
    for key in keys:
        try:
            print(f"{key}: {fetch(key, root, manifest)}")
        except (DataError, ConfigError) as exc:
            failed.append(key)
            print(f"{key}: FAILED: {exc}", file=sys.stderr)
    if failed:
        print(f"not fetched: {failed}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``status`` or ``fetch [KEY ...]``."""
    parser = argparse.ArgumentParser(prog="python -m frozenseg.manifest", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["status", "fetch"])
    parser.add_argument("keys", nargs="*", help="manifest keys (fetch: default entries when none)")
    parser.add_argument("--root", default=None, help="data root (default: $FROZENSEG_DATA or <repo>/data)")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            return _print_status(args.root)
        return _fetch_many(args.keys, args.root)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
