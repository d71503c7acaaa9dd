"""What a rehearsal must show, read from the files the run wrote (results, artifacts, the report, device logs)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PROFILE = "rehearsal"
NB08_MODELS = ("sam_vit_b", "medsam", "litemedsam")
NETWORKS = ("unet_r34", "segformer_b2")


@dataclass
class Check:
    """One assertion of the rehearsal: its name, whether it held, and what was seen."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """'ok   name: detail' or 'FAIL name: detail'."""
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def _results(name: str):
    """A notebook's results table of the rehearsal profile (None when absent)."""
    from ..errors import DataError
    from ..results import load_results

    try:
        return load_results(name, PROFILE)
    except DataError:
        return None


def device_logs(folder: Path) -> list[dict]:
    """Every process's device log (frozenseg.devices) written during the rehearsal."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


def _on(devices: list[str], wanted: str) -> bool:
    """True when every device is the wanted one ('cuda' matches 'cuda:0')."""
    return bool(devices) and all(d == wanted or d.split(":")[0] == wanted for d in devices)


def loads_per_notebook(logs: list[dict]) -> dict[str, dict[str, int]]:
    """How many times each model was loaded in each notebook's process (a model built per fit shows up here)."""
    from collections import Counter

    out: dict[str, Counter] = {}
    for log in logs:
        out.setdefault(log.get("notebook") or "?", Counter()).update(m["name"] for m in log["models"])
    return {nb: dict(sorted(c.items())) for nb, c in sorted(out.items())}


def check_devices(logs: list[dict], wanted: str) -> list[Check]:
    """Each loaded model's parameters on ``wanted``; SAM3, DINOv2, the networks and every notebook-08 model loaded."""
    rows = [(log.get("notebook") or "?", m) for log in logs for m in log["models"]]
    off = [f"{nb}: {m['name']} on {m['devices']}" for nb, m in rows if not _on(m["devices"], wanted)]
    out = [Check("models on the device", bool(rows) and not off,
                 f"{len(rows)} loaded model(s) across {len(logs)} process(es), all on {wanted}" if not off
                 else "not on " + wanted + ": " + "; ".join(off[:8]))]
    names = {m["name"] for _, m in rows}
    want = {"SAM3 loaded": ["sam3"], "DINOv2 loaded": ["dinov2"],
            "networks loaded": [f"network {a}" for a in NETWORKS], "notebook-08 models loaded": list(NB08_MODELS)}
    for title, keys in want.items():
        missing = [k for k in keys if k not in names]
        where = sorted({nb for nb, m in rows if m["name"] in keys})
        out.append(Check(title, not missing, f"loaded in {where}" if not missing else f"never loaded: {missing}"))
    return out


def check_run(run_times: dict, notebooks: list[str], build: Path, failure: str = "") -> list[Check]:
    """Every notebook ran (not skipped) and left its executed copy and artifacts record; ``failure``: the end of
    the runner's output when it stopped at a failing notebook."""
    times = run_times.get("notebooks", {})
    not_run = [n for n in notebooks if not isinstance(times.get(n), (int, float))]
    no_files = [n for n in notebooks if not (build / "notebooks" / f"{n}.ipynb").is_file()
                or not (build / "artifacts" / f"{n}.json").is_file()]
    ok = not not_run and not no_files and not failure
    detail = (f"{len(notebooks)} notebooks in {run_times.get('total_s')} s" if ok else
              f"no executed notebook or artifacts: {no_files}; not timed: {not_run}"
              + (f"; the runner stopped: ...{failure[-1500:]}" if failure else ""))
    return [Check("every notebook ran", ok, detail)]


def check_report(index: Path) -> list[Check]:
    """Every report section is built (all its notebooks published) and present in index.html."""
    from ..report import report_context

    ctx = report_context(PROFILE)
    html = index.read_text(encoding="utf-8") if index.is_file() else ""
    bad = [f"{s['number']} {s['title']} ({s['state']})" for s in ctx["sections"]
           if s["state"] != "built" or f'id="{s["anchor"]}"' not in html]
    return [Check("every report section", index.is_file() and not bad,
                  f"{len(ctx['sections'])} sections built in {index}" if not bad and index.is_file()
                  else f"missing or unbuilt: {bad or index}")]


def check_results(nnunet_installed: bool) -> list[Check]:
    """Rows in the results files: every notebook-08 model frozen and tuned, SAM3 concept rows, both networks,
    nnU-Net when installed, the drawer replay."""
    out = []
    nb08 = _results("08_medical_pretraining")
    if nb08 is None:
        out.append(Check("notebook 08 models", False, "no results file"))
    else:
        got = {m: sorted(set(nb08[nb08.model == m].decoder)) for m in NB08_MODELS}
        bad = {m: d for m, d in got.items() if d != ["frozen", "tuned"]}
        out.append(Check("notebook 08 models", not bad, f"frozen and tuned rows of {list(got)}" if not bad
                         else f"missing frozen/tuned rows: {bad}"))
    nb11 = _results("11_concept_search")
    n_sam3 = 0 if nb11 is None else int((nb11.model == "sam3").sum())
    out.append(Check("SAM3 concept rows", n_sam3 > 0, f"{n_sam3} rows with model sam3 in 11_concept_search"))
    nb06 = _results("06_trained_baselines")
    archs = set() if nb06 is None else set(nb06.get("arch", []))
    want = set(NETWORKS) | ({"nnunet"} if nnunet_installed else set())
    note = "" if nnunet_installed else "; nnU-Net not installed here (its extra), so notebook 06 printed that it skipped it"
    out.append(Check("trained networks' rows", want <= archs, f"archs {sorted(archs)}{note}"))
    inits = set() if nb06 is None else set(nb06[nb06.arch.isin(NETWORKS)].init)
    out.append(Check("networks from the ImageNet encoder files", inits == {"pretrained"},
                     f"init of the study's networks: {sorted(inits)} (the fake smp-hub files were loaded)"))
    return out


def check_replay(build: Path) -> list[Check]:
    """The drawer ran with the replay backend in notebook 02: its route table names the localizer 'drawer (replay)'
    with a score (each test image located from a recorded trace; a missing trace raises)."""
    hits = [p.name for p in sorted((build / "tables").glob("02_isic__*")) if "drawer (replay)" in p.read_text()]
    return [Check("drawer in replay mode", bool(hits), f"'drawer (replay)' in {hits}" if hits
                  else f"no table of notebook 02 under {build / 'tables'} names 'drawer (replay)'")]
