"""Each notebook's units of work under a profile, and a run's length estimated from a rehearsal's per-unit times.

The runner records each notebook's units beside its seconds in ``report/build/<profile>/run_times.json``; a later
run divides a rehearsal's seconds by the rehearsal's units and multiplies by its own. Each notebook has one unit,
the work its time grows with (named in :func:`work_units`); the estimate assumes it grows in proportion to it.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import paths
from ..config import Profile
from .sizes import fits_budgets, live_domains

REHEARSAL = "rehearsal"       # the rehearsal's profile name: its build's run_times.json holds the per-unit times
PIPELINE_NOTEBOOKS = {"02_isic": "isic", "03_spleen": "spleen", "04_kvasir": "kvasir", "05_cxr": "cxr"}


def work_units(profile: Profile, sizes: dict[str, dict], seeds, present: set[str] | None = None
               ) -> dict[str, tuple[float, str]]:
    """Notebook -> (units of work, what a unit is) for ``profile`` with the domain ``sizes`` of
    :func:`frozenseg.plan.sizes.domain_sizes`."""
    from ..experiments.baselines import baseline_params
    from ..experiments.budgets import settings
    from ..experiments.concept_search import concept_params
    from ..experiments.fewshot import ARM_LABELS, fewshot_params
    from ..experiments.pretraining import CANDIDATES
    from ..pipeline.genome import MAX_GENOME_LABELS
    from .sizes import weights_present

    s = len(list(seeds))
    live = live_domains(sizes)
    test = sum(v["test"] for v in live.values())
    pool = sum(v["train_pool"] for v in live.values())
    pp, fp, bp, cp = settings(profile), fewshot_params(profile), baseline_params(profile), concept_params(profile)

    def pipeline(d: str) -> float:
        v = live.get(d)
        if v is None:
            return 0.0
        if d == "spleen":
            genome = pp["spleen_genome_budget"] * pp["spleen_genome_volumes"] * v.get("slices_per_volume", 0)
            return s * sum(v["test"] + genome for _ in fits_budgets(profile.budgets, v["train_pool"]))
        return s * sum(v["test"] + pp["genome_budget"] * min(pp["n_genome"], MAX_GENOME_LABELS, n)
                       for n in fits_budgets(profile.budgets, v["train_pool"]))

    image_epochs = s * fp["epochs"] * sum(sum(fits_budgets(fp["budgets"], v["train_pool"])) for v in live.values())
    others = [k for k in CANDIDATES if k != profile.model and (present is None or weights_present(k, present))]
    runs = s * len(bp["archs"]) * sum(len(fits_budgets(bp["budgets"], v["train_pool"])) for v in live.values())
    loops = s * len(cp["starts"]) * 2 * cp["rounds"]
    concept = loops * sum(min(cp["pool"] or v["train_pool"], v["train_pool"]) + v["test"] for v in live.values())
    units = {
        "00_data": (test + pool, "images (slices) read"),
        "01_frozen_oracle": (s * test, "test units x seeds"),
        **{nb: (pipeline(d), "pipeline runs on one image: test units and genome evaluations, at every N, x seeds")
           for nb, d in PIPELINE_NOTEBOOKS.items()},
        # steps, not pixels: a small network's step costs mostly its fixed overhead at the rehearsal's sizes and on a
        # GPU, so scaling by image area multiplies that overhead too
        "06_trained_baselines": (runs * bp["steps"], "training steps at the step cap"),
        "07_fewshot_decoder": (len(ARM_LABELS) * image_epochs, "decoder-tuning image-epochs at the epoch cap"),
        "08_medical_pretraining": (len(others) * image_epochs + s * test,
                                   "decoder-tuning image-epochs of the models not reused from 07, plus test units"),
        "09_router": (s * test, "test units x seeds"),
        "10_gate_validity": (s * test, "test units x seeds"),
        "11_concept_search": (concept, "image-rounds of the annotation loops"),
        "12_gallery": (test, "test units"),
        "13_annotate_loop": (annotate_items(profile, sizes), "items predicted by the annotate command's rounds"),
    }
    return {k: (float(v), what) for k, (v, what) in units.items()}


def annotate_items(profile: Profile, sizes: dict[str, dict]) -> float:
    """Items the annotate loops of notebook 13 predict: per seed, round 0 and both strategies' later rounds, each
    predicting the pool's unlabelled rest and the held-out units."""
    from ..experiments.annotate_loop import loop_spec, profile_params

    params = profile_params(profile)
    spec = loop_spec(params)
    v = live_domains(sizes).get(spec.domain)
    if v is None:
        return 0.0
    pool = min(spec.pool or v["train_pool"], v["train_pool"])
    held = v["test"] if spec.held_out is None else min(spec.held_out, v["test"])
    per_round = [pool - spec.start - r * spec.per_round + held for r in range(spec.rounds + 1)]
    return float(len(params["seeds"]) * (per_round[0] + 2 * sum(per_round[1:])))


def test_units(sizes: dict[str, dict], seeds) -> float:
    """Test units of the domains a run gets through, times the seeds."""
    return float(len(list(seeds)) * sum(v["test"] for v in live_domains(sizes).values()))


def training_record(profile: str, since: float = 0.0) -> dict:
    """The trained networks' own clock in this run: seconds of training and steps run, summed over the run folders
    notebook 06 finished after ``since`` (a time.time() value)."""
    from ..experiments.baselines import NOTEBOOK, RUN_FILE, runs_root

    seconds = steps = 0.0
    root = runs_root(profile)
    for f in root.rglob(RUN_FILE) if root.is_dir() else ():
        if f.stat().st_mtime < since:
            continue
        rec = json.loads(f.read_text(encoding="utf-8"))
        seconds += float(rec.get("seconds") or 0.0)
        steps += float(rec.get("steps_run") or 0)
    return {NOTEBOOK: {"seconds": round(seconds, 2), "units": steps}} if steps else {}


def run_units(profile: Profile, seeds, data_root=None, since: float = 0.0) -> dict:
    """What the runner records beside its times: each notebook's units, the test units, and the trained networks'
    own seconds and steps (notebook 06 is mostly training; its estimate scales that part by itself)."""
    from .sizes import domain_sizes, present_keys

    sizes = domain_sizes(profile, data_root)
    units = work_units(profile, sizes, seeds, present_keys(data_root))
    return {"units": {nb: float(f"{u:.4g}") for nb, (u, _) in units.items()}, "test_units": test_units(sizes, seeds),
            "training": training_record(profile.name, since)}


def rehearsal_timings(path: str | Path | None = None) -> tuple[dict | None, Path]:
    """The rehearsal build's run_times.json (``path``, else report/build/rehearsal/) and where it was looked for."""
    path = Path(path) if path else paths.build_dir(REHEARSAL) / "run_times.json"
    if not path.is_file():
        return None, path
    return json.loads(path.read_text(encoding="utf-8")), path


def estimate(units: dict[str, tuple[float, str]], timings: dict, notebooks=None, test_here: float | None = None
             ) -> tuple[list[dict], float]:
    """Per notebook: the rehearsal's seconds and units, this run's units, the estimate; and the total seconds.

    A notebook's fixed cost (kernel start, imports, setup: the rehearsal's shortest notebook time, which every notebook
    pays) is kept as it is; the rest of its rehearsal time is scaled by this run's units over the rehearsal's. Where
    the rehearsal recorded a notebook's own training clock (notebook 06), training is scaled by its seconds per step
    and the rest of the notebook by the test units."""
    times = {k: v for k, v in (timings.get("notebooks") or {}).items() if isinstance(v, (int, float))}
    there, trained = timings.get("units") or {}, timings.get("training") or {}
    fixed = min(times.values()) if times else 0.0
    test_ratio = test_here / timings["test_units"] if test_here is not None and timings.get("test_units") else None
    rows, total = [], 0.0
    for nb in notebooks or list(units):
        here, what = units.get(nb, (0.0, "no unit"))
        t, u, tr = times.get(nb), there.get(nb), trained.get(nb)
        if t is None:
            est, how = None, "no rehearsal time (it did not run, or was skipped as up to date)"
        elif tr and tr.get("units") and test_ratio is not None:
            rest = max(t - tr["seconds"] - fixed, 0.0) * test_ratio
            est, how = fixed + rest + tr["seconds"] / tr["units"] * here, "scaled"
        elif not u:
            est, how = float(t), "not scaled (no units recorded in the rehearsal)"
        else:
            est, how = fixed + max(t - fixed, 0.0) * here / u, "scaled"
        rows.append({"notebook": nb, "rehearsal_s": t, "rehearsal_units": u, "units": here, "unit": what,
                     "estimate_s": est, "how": how})
        total += est or 0.0
    return rows, total


def _hours(seconds: float) -> str:
    """Seconds as h, min or s."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _num(x: float) -> str:
    """A unit count: whole numbers from 100 up, three significant digits below."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


SHORT = {"scaled": "", "not scaled (no units recorded in the rehearsal)": " (unscaled)"}


def estimate_lines(units: dict[str, tuple[float, str]], notebooks=None, timings_path=None,
                   test_here: float | None = None) -> list[str]:
    """The printed estimate, with how it was made; or the line that says to run the rehearsal."""
    timings, where = rehearsal_timings(timings_path)
    if timings is None:
        return [f"Length: no rehearsal timings ({where} is absent): run make rehearsal (on the machine and device this "
                "run will use), and this plan estimates the run's length from it"]
    rows, total = estimate(units, timings, notebooks, test_here)
    device = timings.get("device", "an unrecorded device")
    left_out = [r["notebook"] for r in rows if r["estimate_s"] is None]
    lines = [f"Estimated length: about {_hours(total)}"
             + (f", leaving out {len(left_out)} notebook(s) the rehearsal has no time for ({', '.join(left_out)})"
                if left_out else "")
             + f". This is an estimate, not a measurement: each notebook's time in the rehearsal ({where}, commit "
             f"{timings.get('commit', '?')}, on {device}) less the fixed cost every notebook pays (the rehearsal's "
             "shortest notebook), divided by that notebook's units of work in the rehearsal and multiplied by its "
             "units in this run, plus the fixed cost. It assumes time grows in proportion to those units on the same device; "
             "trained networks and tuned decoders are counted at their caps (the plateau stops most runs sooner, so "
             "those lines are upper bounds), nnU-Net's own training is not included, and real weights cost what the "
             "rehearsal's weights of the same architecture cost."]
    lines.append(f"  {'notebook':<24} {'rehearsal':>10} {'units there':>12} {'units here':>14} {'estimate':>10}  unit")
    for r in rows:
        t = "-" if r["rehearsal_s"] is None else _hours(r["rehearsal_s"])
        ut = "-" if not r["rehearsal_units"] else _num(r["rehearsal_units"])
        est = "-" if r["estimate_s"] is None else _hours(r["estimate_s"]) + SHORT.get(r["how"], "")
        lines.append(f"  {r['notebook']:<24} {t:>10} {ut:>12} {_num(r['units']):>14} {est:>10}  {r['unit']}")
    return lines
