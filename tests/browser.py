"""Headless Chromium for report tests: find or install it, screenshot a page, dump its DOM."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def _found() -> str | None:
    """Path of an installed Chromium, or None."""
    env = os.environ.get("CHROMIUM")
    for cand in ((env,) if env else ()) + CANDIDATES:
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return shutil.which("chromium")


def _apt(*args: str) -> bool:
    """Run ``apt-get`` non-interactively; True on success."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], env=env, capture_output=True, timeout=900).returncode == 0


def chromium_path() -> str:
    """Chromium binary; installs it with apt when root, else skips the test with the reason."""
    path = _found()
    if path:
        return path
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless Chromium not installed and cannot apt-get install it (not root); "
                    "install the `chromium` package or set CHROMIUM=/path/to/chromium")
    if not _apt("install", "-y", "-q", "chromium"):
        _apt("update", "-q")
        _apt("install", "-y", "-q", "chromium")
    path = _found()
    if not path:
        pytest.skip("apt-get install chromium failed (offline apt mirror?); browser checks skipped")
    return path


def _run(html_path: str | Path, *extra: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``file://html_path`` with a throwaway profile."""
    url = Path(html_path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [chromium_path(), *FLAGS, f"--user-data-dir={profile}", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def screenshot(html_path: str | Path, png_path: str | Path, size: str = "1280,2000") -> Path:
    """Save a PNG screenshot of the page; raise if Chromium wrote none."""
    png_path = Path(png_path).resolve()
    proc = _run(html_path, f"--screenshot={png_path}", f"--window-size={size}", "--virtual-time-budget=5000")
    if not png_path.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (rc={proc.returncode}): {proc.stderr[-2000:]}")
    return png_path


def dump_dom(html_path: str | Path, budget_ms: int = 5000) -> str:
    """The page's DOM after load (scripts run, images loaded within the virtual-time budget)."""
    proc = _run(html_path, "--dump-dom", f"--virtual-time-budget={budget_ms}")
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium --dump-dom failed (rc={proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout
