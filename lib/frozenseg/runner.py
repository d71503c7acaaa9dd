"""Run the numbered jupytext notebooks headlessly with papermill, then build the report.

    python -m frozenseg.runner --profile cpu --seeds 0 1 2            # every notebook, then the report
    python -m frozenseg.runner --profile smoke --notebooks 01_frozen_oracle

A notebook whose source, library and parameters are unchanged since its last successful run is skipped
(its stamp file records them), so an interrupted build resumes where it stopped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from . import paths
from .config import get_profile
from .errors import ConfigError
from .io import atomic_path, write_json_atomic
from .progress import kernel_arguments
from .repro import git_commit

KERNEL = "frozenseg"
# Notebooks that read other notebooks' results: they run after those (when selected) and rerun when they change.
PIPELINES = ("02_isic", "03_spleen", "04_kvasir", "05_cxr")
NEEDS: dict[str, tuple[str, ...]] = {
    "06_trained_baselines": (*PIPELINES, "07_fewshot_decoder"),
    # 07's localizer arm reuses the route fits (genomes) of 02-05 at the same budgets from the genome cache
    "07_fewshot_decoder": PIPELINES,
    "08_medical_pretraining": ("07_fewshot_decoder",),
    # 11 compares concept search with the oracle, the pipelines and the tuned decoder on the same test units
    "11_concept_search": ("01_frozen_oracle", *PIPELINES, "07_fewshot_decoder"),
    # 10 refits the 2D pipelines from the genomes 02/04/05 cached and checks its deployed Dice against their results
    "10_gate_validity": ("02_isic", "04_kvasir", "05_cxr"),
    "12_gallery": ("02_isic", "03_spleen", "04_kvasir", "05_cxr"),
}


def notebook_sources() -> dict[str, Path]:
    """Numbered notebooks in run order: name -> path."""
    return {p.stem: p for p in sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.py"))}


def run_order(names: list[str]) -> list[str]:
    """``names`` in the given (numbered) order, except that a notebook runs after the selected ones it NEEDS."""
    out: list[str] = []

    def visit(name: str) -> None:
        if name in out:
            return
        for dep in NEEDS.get(name, ()):
            if dep in names:
                visit(dep)
        out.append(name)

    for name in names:
        visit(name)
    return out


def inputs_hash(name: str, profile: str) -> str:
    """Hash of the results files ``name`` reads (missing ones count as missing), so it reruns when they change."""
    h = hashlib.sha256()
    for dep in NEEDS.get(name, ()):
        f = paths.results_dir(profile) / f"{dep}.parquet"
        h.update(dep.encode() + (f.read_bytes() if f.is_file() else b"<missing>"))
    return h.hexdigest()[:16]


def library_hash() -> str:
    """Hash of the library sources (a changed library invalidates every notebook's stamp)."""
    h = hashlib.sha256()
    for p in sorted((paths.REPO / "lib" / "frozenseg").rglob("*")):
        if p.suffix in {".py", ".j2"} and p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def data_state(data_root: str | None = None) -> dict:
    """What a notebook may read from outside the repository: the data root, which of the manifest's datasets and
    weights are present there (adding DINOv2 weights changes notebook 04), and the encoder engine asked for."""
    from .manifest import status
    from .models.engine import requested_engine

    root = str(paths.data_root() if data_root is None else Path(data_root).expanduser().resolve())
    present = sorted(r["key"] for r in status(root) if r["present"])
    return {"data_root": root, "present": present, "encoder": requested_engine()}


def _stamp(name: str, params: dict) -> dict:
    """What a notebook's outputs depend on: its source, the library, its parameters, the results it reads and the
    data and weights it can see."""
    src = notebook_sources()[name].read_bytes()
    return {"notebook": hashlib.sha256(src).hexdigest()[:16], "library": library_hash(),
            "params": json.dumps(params, sort_keys=True), "inputs": inputs_hash(name, params["profile"]),
            "data": data_state(params.get("data_root"))}


def kernel_name() -> str:
    """The project's kernel if registered, else the current interpreter's default kernel."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL if KERNEL in KernelSpecManager().find_kernel_specs() else "python3"


def run_notebook(name: str, params: dict, force: bool = False, return_skipped: bool = False):
    """Execute one notebook into ``report/build/<profile>/notebooks/<name>.ipynb``; skip if up to date. Returns the
    notebook's path (and whether it was skipped, with ``return_skipped``). Its kernel is headless: each progress bar
    leaves one summary line (frozenseg.progress)."""
    import jupytext
    import papermill

    sources = notebook_sources()
    if name not in sources:
        raise ConfigError(f"unknown notebook {name!r}; available: {list(sources)}")
    out_dir = paths.build_dir(params["profile"]) / "notebooks"
    out = out_dir / f"{name}.ipynb"
    stamp_path = out_dir / f"{name}.stamp.json"
    stamp = _stamp(name, params)
    if not force and out.is_file() and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        print(f"[skip] {name}: up to date")
        return (out, True) if return_skipped else out
    nb = jupytext.read(sources[name])
    t0 = time.perf_counter()
    print(f"[run ] {name} ({params['profile']}, seeds {params['seeds']})", flush=True)
    os.environ["FROZENSEG_NOTEBOOK"] = name      # the kernel inherits it (frozenseg.devices names its log by it)
    with atomic_path(out) as tmp:
        papermill.execute_notebook(nb, str(tmp), parameters=params, kernel_name=kernel_name(),
                                   cwd=str(paths.REPO), progress_bar=True, log_output=False,
                                   extra_arguments=kernel_arguments())
    _render_html(out)
    write_json_atomic(stamp_path, stamp)
    print(f"[done] {name} in {time.perf_counter() - t0:.1f} s", flush=True)
    return (out, False) if return_skipped else out


def _render_html(ipynb: Path) -> None:
    """Render the executed notebook to HTML beside it, for the report's links."""
    from .report import render_notebook_html

    render_notebook_html(ipynb)


def run_all(profile: str, seeds: list[int], notebooks: list[str] | None = None, force: bool = False,
            data_root: str | None = None, source: str | None = None, jobs: int = 1) -> Path:
    """Run the notebooks in order (``jobs`` > 1: that many at once, each after the notebooks it NEEDS, each kernel
    with its share of the cores), then build the HTML report; returns the report's path."""
    from .report import build_report

    get_profile(profile)
    params = {"profile": profile, "seeds": [int(s) for s in seeds]}
    if data_root:
        params["data_root"] = str(data_root)
    if source:
        params["source"] = source
    order = run_order(notebooks or list(notebook_sources()))
    announce_plan(profile, params["seeds"], data_root, order)
    cold, started = cache_entries(), time.time()
    t0, times = time.perf_counter(), {}
    if jobs <= 1:
        for name in order:
            t = time.perf_counter()
            skipped = run_notebook(name, params, force=force, return_skipped=True)[1]
            times[name] = "skipped" if skipped else round(time.perf_counter() - t, 1)
    else:
        times = run_parallel(order, params, force, jobs)
    report = build_report(profile)
    record = {"profile": profile, "seeds": params["seeds"], "jobs": jobs, "total_s": round(time.perf_counter() - t0, 1),
              "notebooks": times, "all_notebooks": sorted(order) == sorted(notebook_sources()),
              "embedding_cache_entries_at_start": cold, "commit": git_commit(),
              **run_units(profile, params["seeds"], data_root, started)}
    write_json_atomic(paths.build_dir(profile) / "run_times.json", record)
    if record["all_notebooks"] and cold == 0:        # a cold build of every notebook: kept apart, so the README's
        write_json_atomic(paths.build_dir(profile) / COLD_TIMES, record)   # row survives later partial runs
    return report


COLD_TIMES = "cold_run_times.json"     # the last cold build of every notebook (run_times.json: the last run)


PLANNED_PROFILES = ("full",)     # profiles whose runs print their plan before the first notebook


def announce_plan(profile: str, seeds: list[int], data_root: str | None, order: list[str]) -> None:
    """Before a full run: what will run, its sizes and training caps, and its estimated length (frozenseg.plan)."""
    if profile not in PLANNED_PROFILES:
        return
    from .plan.printout import plan_lines

    try:
        print("\n".join(plan_lines(profile, seeds, data_root, notebooks=order)), flush=True)
    except Exception as exc:  # noqa: BLE001 - the plan informs; a failure to make it must not stop the run
        print(f"[plan] could not plan this run ({type(exc).__name__}: {exc}); running it anyway", flush=True)


def run_units(profile: str, seeds: list[int], data_root: str | None, started: float = 0.0) -> dict:
    """The units of work of each notebook, the test units and the trained networks' own clock since ``started``
    (frozenseg.plan.estimate) and the device, for run_times.json: a rehearsal's seconds per unit are what a full run's
    estimate scales."""
    from .models import default_device
    from .plan.estimate import run_units as units_of

    try:
        record = units_of(get_profile(profile), seeds, data_root, started)
    except Exception as exc:  # noqa: BLE001 - a finished run keeps its times even when its units cannot be counted
        print(f"[plan] units of work not recorded ({type(exc).__name__}: {exc})", flush=True)
        record = {"units": None}
    return {**record, "device": default_device()}


def cache_entries() -> int:
    """How many embeddings the cache holds (0: a cold run encodes every image)."""
    root = paths.cache_root() / "embeddings"
    return sum(1 for _ in root.rglob("*.npz")) if root.is_dir() else 0


def run_parallel(order: list[str], params: dict, force: bool, jobs: int) -> dict:
    """Run notebooks ``jobs`` at a time in separate processes, each once the selected notebooks it NEEDS are done;
    each kernel gets ``cores // jobs`` torch threads (FROZENSEG_THREADS). A failure stops new starts, waits for the
    running ones and raises with the failed notebook's log."""
    import os
    import subprocess
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    env = {**os.environ, "FROZENSEG_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}
    logs = paths.build_dir(params["profile"]) / "notebooks"
    logs.mkdir(parents=True, exist_ok=True)
    selected, done, failed = set(order), set(), []

    def one(name: str) -> tuple[str, int]:
        cmd = [sys.executable, "-m", "frozenseg.runner", "--profile", params["profile"], "--seeds",
               *map(str, params["seeds"]), "--notebooks", name, "--no-report", "--jobs", "1"]
        cmd += ["--data-root", params["data_root"]] if params.get("data_root") else []
        cmd += ["--source", params["source"]] if params.get("source") else []
        cmd += ["--force"] if force else []
        cmd += ["--no-plan"]                      # printed once, by this process
        with open(logs / f"{name}.log", "w") as fh:
            return name, subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode

    pending, running, times = list(order), {}, {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            ready = [n for n in pending if all(d in done or d not in selected for d in NEEDS.get(n, ()))]
            while ready and len(running) < jobs and not failed:
                name = ready.pop(0)
                pending.remove(name)
                print(f"[run ] {name} ({params['profile']}, seeds {params['seeds']}, {env['FROZENSEG_THREADS']} "
                      "thread(s))", flush=True)
                running[pool.submit(one, name)] = time.perf_counter()
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                name, rc = fut.result()
                secs = time.perf_counter() - running.pop(fut)
                if rc:
                    failed.append(name)
                    print(f"[fail] {name} after {secs:.1f} s; log: {logs / (name + '.log')}", flush=True)
                else:
                    done.add(name)
                    times[name] = round(secs, 1)
                    print(f"[done] {name} in {secs:.1f} s", flush=True)
    if failed:
        tail = (logs / f"{failed[0]}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"notebook {failed[0]} failed; the end of its log ({logs / (failed[0] + '.log')}):\n{tail}")
    if pending:
        raise RuntimeError(f"notebooks not run because a notebook they need failed: {pending}")
    return times


def main(argv=None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", nargs="+", default=["0"], help="e.g. --seeds 0 1 2 (or one quoted string)")
    ap.add_argument("--notebooks", nargs="*", help="names like 01_frozen_oracle (default: all)")
    ap.add_argument("--data-root", default=None, help="real data folder (default: $FROZENSEG_DATA)")
    ap.add_argument("--source", default=None, choices=["phantom", "real", "auto"], help="override the profile's data source")
    ap.add_argument("--force", action="store_true", help="rerun notebooks even if up to date")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks run at once (each after those it reads)")
    ap.add_argument("--no-report", action="store_true", help="run the notebooks only; do not build the report")
    ap.add_argument("--no-plan", action="store_true", help="do not print a full run's plan before its first notebook")
    a = ap.parse_args(argv)
    seeds = [int(s) for chunk in a.seeds for s in str(chunk).split()]
    if a.no_report:
        params = {"profile": a.profile, "seeds": seeds, **({"data_root": a.data_root} if a.data_root else {}),
                  **({"source": a.source} if a.source else {})}
        order = run_order(a.notebooks or list(notebook_sources()))
        if not a.no_plan:
            announce_plan(a.profile, seeds, a.data_root, order)
        for name in order:
            run_notebook(name, params, force=a.force)
        return 0
    path = run_all(a.profile, seeds, a.notebooks, a.force, a.data_root, a.source, a.jobs)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
