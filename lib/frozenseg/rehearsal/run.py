"""``python -m frozenseg.rehearsal``: build the fake root, load every weight, run every notebook in the rehearsal
profile through the runner, build the report, check it, and write ``<out>/rehearsal.json``."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .. import paths
from ..io import write_json_atomic
from . import checks
from .root import LLM_MODEL, build

DEFAULT_OUT = paths.REPO / "rehearsal"
SAM_KEYS = ("sam_vit_b", "medsam", "litemedsam", "sam_vit_l", "sam_vit_h")


def environment(out: Path, device: str) -> dict:
    """The variables every rehearsal process runs under (the fake data root, its own cache and outputs)."""
    env = {**os.environ, "FROZENSEG_DATA": str(out / "work" / "data"), "FROZENSEG_CACHE": str(out / "work" / "cache"),
           "FROZENSEG_OUT": str(out), "FROZENSEG_DEVICE": device, "FROZENSEG_DEVICE_LOG": str(out / "devices"),
           "FROZENSEG_LLM_MODEL": LLM_MODEL, "PYTHONPATH": os.pathsep.join(
               p for p in (str(paths.REPO / "lib"), os.environ.get("PYTHONPATH")) if p)}
    # A GPU run encodes with eager PyTorch (the engine 'auto' picks on a GPU); so does the rehearsal on any device.
    env.setdefault("FROZENSEG_ENCODER", "torch")
    return env


LOAD_CHECK = """
import gc, sys
from frozenseg.models import _load, load_model
for key in sys.argv[1:]:
    m = load_model(key)
    print(key, 'loaded on', m.device, flush=True)
    del m
    _load.cache_clear()            # one model in memory at a time (ViT-H alone is 2.5 GB)
    gc.collect()
"""


def load_every_weight(env: dict, present: list[str]) -> float:
    """Load each box-promptable model whose weights were written (ViT-L/H included), in a separate process so their
    memory is freed; each is logged by frozenseg.devices. Returns the seconds taken."""
    from ..models import MODELS

    keys = [k for k in SAM_KEYS if MODELS[k][1] is None or MODELS[k][1] in present]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", LOAD_CHECK, *keys], env={**env, "FROZENSEG_NOTEBOOK": "load_check"},
                   check=True)
    return round(time.perf_counter() - t0, 1)


def run_notebooks(env: dict, notebooks: list[str] | None, log: Path) -> str:
    """Every notebook (or ``notebooks``) through the runner in the rehearsal profile, then the report; the runner's
    output goes to the terminal and to ``log``. Returns '' on success, else the end of that output."""
    cmd = [sys.executable, "-m", "frozenseg.runner", "--profile", checks.PROFILE, "--seeds", "0", "--force"]
    cmd += ["--notebooks", *notebooks] if notebooks else []
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=str(paths.REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:
            sys.stdout.write(line)
            fh.write(line)
            fh.flush()
    if proc.wait() == 0:
        return ""
    return log.read_text(errors="replace")[-4000:]


def rehearse(out: str | Path = DEFAULT_OUT, device: str | None = None, large_sam: bool = True,
             notebooks: list[str] | None = None, reuse_root: bool = False) -> dict:
    """The whole rehearsal; returns (and writes to ``<out>/rehearsal.json``) its summary with every check."""
    from ..config import get_profile
    from ..baselines.nnunet import nnunet_available
    from ..runner import notebook_sources

    out = Path(out).expanduser().resolve()
    device = device or os.environ.get("FROZENSEG_DEVICE") or "cpu"
    t0 = time.perf_counter()
    env = environment(out, device)
    for sub in ("devices", "results", "report"):
        _clear(out / sub)
    if reuse_root and (out / "work" / "data").is_dir():
        from ..manifest import status

        root_info = {"reused": str(out / "work" / "data")}
        present = [r["key"] for r in status(out / "work" / "data") if r["present"]]
    else:
        os.environ["FROZENSEG_CACHE"] = env["FROZENSEG_CACHE"]     # the decoded-image cache of the trace step
        root = build(out / "work", large_sam=large_sam, max_side=get_profile(checks.PROFILE).real_max_side)
        root_info = {"data": str(root.data), "overlay": str(root.overlay), "present": root.present,
                     "left_out": root.left_out, "seconds": root.seconds}
        present = root.present
    summary = {"device": device, "profile": checks.PROFILE, "root": root_info}
    summary["load_check_s"] = load_every_weight(env, present)
    failure = run_notebooks(env, notebooks, out / "runner.log")
    os.environ["FROZENSEG_OUT"] = str(out)                          # the checks read this run's outputs
    build_dir = paths.build_dir(checks.PROFILE)
    times_file = build_dir / "run_times.json"
    run_times = json.loads(times_file.read_text()) if times_file.is_file() and not failure else {"notebooks": {}}
    names = notebooks or list(notebook_sources())
    found = checks.check_run(run_times, names, build_dir, failure)
    if not notebooks:
        found += checks.check_report(build_dir / "index.html") + checks.check_results(nnunet_available())
        found += checks.check_replay(build_dir)
    logs = checks.device_logs(out / "devices")
    found += checks.check_devices(logs, device)
    summary["loaded"] = checks.loads_per_notebook(logs)
    import resource

    kids, me = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    summary["cpu_s"] = round(kids.ru_utime + kids.ru_stime + me.ru_utime + me.ru_stime, 1)   # every process's CPU time
    summary.update(run_times=run_times, run_times_path=str(build_dir / "run_times.json"),
                   checks=[c.__dict__ for c in found], passed=all(c.ok for c in found),
                   total_s=round(time.perf_counter() - t0, 1))
    write_json_atomic(out / "rehearsal.json", summary)
    print("\n".join(c.line() for c in found))
    print(f"rehearsal {'passed' if summary['passed'] else 'FAILED'} in {summary['total_s']} s on {device}: "
          f"{out / 'rehearsal.json'}")
    return summary


def _clear(folder: Path) -> None:
    """Remove a previous rehearsal's outputs."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Command line; exit code 0 only when every check held."""
    ap = argparse.ArgumentParser(prog="python -m frozenseg.rehearsal", description=__doc__)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: $FROZENSEG_DEVICE, else cpu)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--no-large-sam", action="store_true",
                    help="do not write or load the full-size random SAM ViT-L (1.2 GB) and ViT-H (2.5 GB)")
    ap.add_argument("--notebooks", nargs="*", default=None, help="only these notebooks (checks: runs and devices)")
    ap.add_argument("--reuse-root", action="store_true", help="keep the fake data root of a previous rehearsal")
    a = ap.parse_args(argv)
    if a.device and a.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda, but torch sees no GPU (torch.cuda.is_available() is False)", file=sys.stderr)
            return 2
    summary = rehearse(a.out, a.device, not a.no_large_sam, a.notebooks, a.reuse_root)
    return 0 if summary["passed"] else 1
