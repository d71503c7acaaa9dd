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
import sys
import time
from pathlib import Path

from . import paths
from .config import get_profile
from .errors import ConfigError
from .io import atomic_path, write_json_atomic

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


def run_notebook(name: str, params: dict, force: bool = False) -> Path:
    """Execute one notebook into ``report/build/<profile>/notebooks/<name>.ipynb``; skip if up to date."""
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
        return out
    nb = jupytext.read(sources[name])
    t0 = time.perf_counter()
    print(f"[run ] {name} ({params['profile']}, seeds {params['seeds']})", flush=True)
    with atomic_path(out) as tmp:
        papermill.execute_notebook(nb, str(tmp), parameters=params, kernel_name=kernel_name(),
                                   cwd=str(paths.REPO), progress_bar=True, log_output=False)
    _render_html(out)
    write_json_atomic(stamp_path, stamp)
    print(f"[done] {name} in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def _render_html(ipynb: Path) -> None:
    """Render the executed notebook to HTML beside it, for the report's links."""
    from .report import render_notebook_html

    render_notebook_html(ipynb)


def run_all(profile: str, seeds: list[int], notebooks: list[str] | None = None, force: bool = False,
            data_root: str | None = None, source: str | None = None) -> Path:
    """Run the notebooks in order, then build the HTML report; returns the report's path."""
    from .report import build_report

    get_profile(profile)
    params = {"profile": profile, "seeds": [int(s) for s in seeds]}
    if data_root:
        params["data_root"] = str(data_root)
    if source:
        params["source"] = source
    for name in run_order(notebooks or list(notebook_sources())):
        run_notebook(name, params, force=force)
    return build_report(profile)


def main(argv=None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", nargs="+", default=["0"], help="e.g. --seeds 0 1 2 (or one quoted string)")
    ap.add_argument("--notebooks", nargs="*", help="names like 01_frozen_oracle (default: all)")
    ap.add_argument("--data-root", default=None, help="real data folder (default: $FROZENSEG_DATA)")
    ap.add_argument("--source", default=None, choices=["phantom", "real"], help="override the profile's data source")
    ap.add_argument("--force", action="store_true", help="rerun notebooks even if up to date")
    a = ap.parse_args(argv)
    seeds = [int(s) for chunk in a.seeds for s in str(chunk).split()]
    path = run_all(a.profile, seeds, a.notebooks, a.force, a.data_root, a.source)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
