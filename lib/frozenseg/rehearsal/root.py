"""Build the rehearsal's data root: fake archives fetched through the manifest's own code, fake weights in place,
a manifest overlay with the fake files' checksums, and recorded drawer traces for the replay backend.

The real ``data_manifest.yaml`` is never edited. The overlay (``<work>/manifest_overlay.yaml``) is a copy whose
urls point at the fake archives (``file://``) and whose sha256 fields are the fake files' hashes, so
``frozenseg.manifest.fetch`` downloads, verifies and extracts them exactly as it does the real ones, and verifies
every fake weight file; then the real manifest's layout globs must all match under the new root.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import manifest, paths
from ..errors import ConfigError
from .datasets import MEMBERS, NO_MEMBER, write_archive
from .weights import LARGE_SAM, write_weights

LLM_MODEL = "rehearsal-replay"      # FROZENSEG_LLM_MODEL of the recorded fake traces
OVERLAY = "manifest_overlay.yaml"


@dataclass
class FakeRoot:
    """Where the rehearsal's data lives and what was written."""

    work: Path
    data: Path
    overlay: Path
    traces: Path
    present: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _raw_manifest() -> dict:
    """The real manifest as plain YAML data (edited in memory for the overlay only)."""
    return yaml.safe_load(paths.MANIFEST.read_text(encoding="utf-8"))


def _fake_part(spec: dict, archive: Path) -> None:
    """Point one download part of the overlay at a fake archive, with its checksum."""
    spec.update(url=archive.resolve().as_uri(), sha256=manifest.sha256_file(archive), manual=False)
    spec.pop("md5", None)


def _datasets(raw: dict, stage: Path) -> None:
    """Write each dataset part's fake archive under ``stage`` and point the overlay's entry at it."""
    for key, spec in raw["datasets"].items():
        parts = [spec, *(spec.get("extra") or [])]
        for i, part in enumerate(parts):
            writer = MEMBERS.get(part.get("member") or "") or NO_MEMBER.get(key)
            if writer is None:
                raise ConfigError(f"the rehearsal has no fake files for {key!r} part {part.get('member')!r}; add a "
                                  "writer to frozenseg/rehearsal/datasets.py")
            fmt = part["format"]
            with tempfile.TemporaryDirectory(dir=stage) as tmp:
                archive = write_archive(stage / "downloads" / f"{key}_{i}.{fmt}", fmt, part.get("member"), writer,
                                        Path(tmp))
            _fake_part(part, archive)


def _weights(raw: dict, data: Path, large_sam: bool, out: FakeRoot) -> None:
    """Write each weight entry's fake weights at its target and put file checksums into the overlay."""
    entries = manifest.load_manifest()
    for key, spec in raw["weights"].items():
        t0 = time.perf_counter()
        dest = write_weights(entries[key], data, large_sam)
        if dest is None:
            out.left_out[key] = "left out (--no-large-sam): written and loaded only without that option"
            continue
        if spec["format"] == "file":
            spec["sha256"] = manifest.sha256_file(dest)
        spec["manual"] = False
        out.seconds[f"weights {key}"] = round(time.perf_counter() - t0, 1)


def write_traces(folder: Path, isic: Path, max_side: int | None) -> int:
    """One recorded reply (a fixed centred polygon, not derived from any mask) per ISIC image, as the drawer's
    replay backend reads them (``isic``: the dataset folder); returns how many were written."""
    from ..cache import image_hash
    from ..data.loaders import load_isic
    from ..io import write_json_atomic
    from ..localizers.drawer import DrawerLocalizer, trace_key, trace_path
    from ..pipeline.router import load_routes

    drawers = [r for r in load_routes().values() if r.localizer["name"] == "drawer"]
    n = 0
    for part in ("training", "validation", "test"):
        for case in load_isic(isic, part=part, max_side=max_side):
            h, w = case.image.shape[:2]
            poly = [[w // 4, h // 4], [3 * w // 4, h // 4], [3 * w // 4, 3 * h // 4], [w // 4, 3 * h // 4]]
            for route in drawers:
                params = {k: v for k, v in route.localizer.items() if k not in ("name", "backend")}
                loc = DrawerLocalizer(backend="replay", llm_model=LLM_MODEL, **params)
                prompt = loc.prompt_for(case.image)
                key = trace_key(image_hash(case.image), prompt, LLM_MODEL)
                reply = {"choices": [{"message": {"role": "assistant", "content": json.dumps({"polygon": poly})}}]}
                write_json_atomic(trace_path(folder, key), {
                    "key": key, "image_hash": image_hash(case.image), "prompt": prompt, "model": LLM_MODEL,
                    "endpoint": "rehearsal (no endpoint)", "recorded_at": "rehearsal", "temperature": 0,
                    "note": "rehearsal: a fixed centred polygon in the recorded-trace format", "status": "ok",
                    "response": reply})
                n += 1
    return n


def build(work: str | Path, large_sam: bool = True, max_side: int | None = None) -> FakeRoot:
    """Build the fake data root under ``work`` (emptied first): ``work/data`` (FROZENSEG_DATA), the overlay,
    ``work/cache/traces``; returns what was written. Raises if any real layout glob is unmatched afterwards."""
    work = Path(work).expanduser().resolve()
    if work.exists():
        shutil.rmtree(work)
    stage, data = work / "stage", work / "data"
    stage.mkdir(parents=True)
    out = FakeRoot(work=work, data=data, overlay=work / OVERLAY, traces=work / "cache" / "traces")
    raw = _raw_manifest()
    t0 = time.perf_counter()
    _datasets(raw, stage)
    out.seconds["datasets"] = round(time.perf_counter() - t0, 1)
    _weights(raw, data, large_sam, out)
    header = ("# Rehearsal overlay of data_manifest.yaml (frozenseg.rehearsal): urls point at fake archives, sha256 "
              "fields are the fake files' hashes.\n")
    out.overlay.write_text(header + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    overlay = manifest.load_manifest(out.overlay)
    t0 = time.perf_counter()
    for key in overlay:
        if key not in out.left_out:
            manifest.fetch(key, data, overlay)          # download (file://), verify sha256, extract
    out.seconds["fetch and verify"] = round(time.perf_counter() - t0, 1)
    shutil.rmtree(stage)
    rows = manifest.status(data)                        # the real manifest's layouts, under the fake root
    missing = [r["key"] for r in rows if not r["present"] and r["key"] not in out.left_out]
    if missing:
        raise ConfigError(f"rehearsal root {data}: the real manifest's layout is not matched for {missing}")
    bundled = manifest.bundled_path(manifest.get_entry("litemedsam"))
    if Path(manifest.locate("litemedsam", data)) == bundled:
        raise ConfigError("rehearsal root: litemedsam resolves to the packaged weights, not the fake copy")
    out.present = [r["key"] for r in rows if r["present"]]
    t0 = time.perf_counter()
    n = write_traces(out.traces, data / manifest.get_entry("isic2018_task1").target, max_side)
    out.seconds["traces"] = round(time.perf_counter() - t0, 1)
    out.seconds["n_traces"] = n
    return out


__all__ = ["FakeRoot", "LARGE_SAM", "LLM_MODEL", "build", "write_traces"]
