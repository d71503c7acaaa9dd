"""The manifest's command line (``make data``, ``make data-status``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import paths
from ..errors import ConfigError, DataError
from .entries import load_manifest, status
from .fetching import fetch

DESCRIPTION = "The data manifest: show what is present, or download, verify and extract entries."


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
    parser = argparse.ArgumentParser(prog="python -m frozenseg.manifest", description=DESCRIPTION)
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
