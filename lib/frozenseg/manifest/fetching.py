"""Fetching a manifest entry: download (checksummed), extract, and place it atomically under the data root."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from ..errors import ChecksumError, DataError
from .entries import CHUNK, Entry, Part, bundled_path, get_entry, layout_missing, missing_error, target_path, verify

TIMEOUT_S = 60


class FetchError(DataError):
    """A download failed (network, HTTP or a licence gate)."""


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
