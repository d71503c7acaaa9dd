"""A run a user can plan: `make data-status` (what each missing entry skips or degrades, and where) and the plan a
full run prints before its first notebook (sizes, training runs and caps, the estimate from a rehearsal)."""
import json

import pytest

from frozenseg import paths, runner
from frozenseg.config import DOMAINS, get_profile
from frozenseg.manifest import EFFECTS, load_manifest
from frozenseg.plan import estimate as est
from frozenseg.plan.printout import plan_lines
from frozenseg.plan.sizes import domain_sizes, training_runs
from frozenseg.plan.uses import effects, entry_domain, entry_notebooks, notebook_domains, status_lines


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def fake_root(tmp_path):
    """A data root with Kvasir-SEG (4 pairs), ISIC's training part (6 pairs) and the SAM ViT-B file; nothing else."""
    root = tmp_path / "data"
    for i in range(4):
        _touch(root / "kvasir" / "Kvasir-SEG" / "images" / f"k{i}.jpg")
        _touch(root / "kvasir" / "Kvasir-SEG" / "masks" / f"k{i}.jpg")
    for i in range(6):
        _touch(root / "isic2018" / "ISIC2018_Task1-2_Training_Input" / f"ISIC_{i:07d}.jpg")
        _touch(root / "isic2018" / "ISIC2018_Task1_Training_GroundTruth" / f"ISIC_{i:07d}_segmentation.png")
    _touch(root / "weights" / "sam_vit_b_01ec64.pth", b"0" * 3 * 2**20)
    return root


# ---------------------------------------------------------------- make data-status


def test_every_manifest_entry_says_what_a_run_does_without_it():
    notebooks = set(runner.notebook_sources())
    domains = notebook_domains()
    for key, entry in load_manifest().items():
        assert entry.without.get("effect") in EFFECTS and entry.without.get("note"), key
        if entry.kind == "dataset":
            assert entry_domain(key) in DOMAINS, f"{key}: no loader of data.loaders reads it"
            # a dataset's notebooks follow from its domain, unless it names the one notebook that reads it (the MR
            # spleen sample: notebook 03 only, not every notebook of the spleen domain)
            assert "notebooks" not in entry.without or len(entry.without["notebooks"]) == 1, key
        else:
            assert "notebooks" in entry.without, f"{key}: declare the notebooks that read these weights"
        nbs = entry_notebooks(entry, domains)
        assert set(nbs) <= notebooks, f"{key}: unknown notebooks {set(nbs) - notebooks}"
        assert nbs or entry.without["effect"] == "skips", f"{key}: a missing entry that no notebook reads only skips"


def test_notebook_domains_come_from_the_notebooks_sources():
    domains = notebook_domains()
    assert domains["02_isic"] == ("isic",) and domains["03_spleen"] == ("spleen",)
    assert domains["00_data"] == DOMAINS and domains["06_trained_baselines"] == DOMAINS


def test_data_status_names_the_sections_a_missing_entry_skips_or_degrades(fake_root):
    text = "\n".join(status_lines(fake_root))
    rows = {r["key"]: r for r in effects(fake_root)}
    assert "kvasir_seg" not in rows and "sam_vit_b" not in rows            # present: not listed as missing
    assert rows["medsam_vit_b"]["effect"] == "skips"
    assert rows["medsam_vit_b"]["notebooks"] == ("08_medical_pretraining",)
    assert rows["medsam_vit_b"]["sections"] == [(6, "Medical pretraining")]
    assert "05_cxr" in rows["montgomery"]["notebooks"] and "04_kvasir" not in rows["montgomery"]["notebooks"]
    assert rows["spleen_mr"]["notebooks"] == ("03_spleen",) and rows["spleen_mr"]["effect"] == "skips"
    assert "medsam_vit_b (skips)" in text and "report sections: 6 Medical pretraining" in text
    assert "isic2018_task1_eval (degrades)" in text and "3 Training-free pipeline" in text


def test_make_data_status_runs_the_plan_status():
    make = (paths.REPO / "Makefile").read_text()
    target = make.split("\ndata-status:")[1].split("\n\n")[0]
    assert "-m frozenseg.plan status" in target


# ---------------------------------------------------------------- sizes and training runs


def test_sizes_of_a_full_run_from_file_listings(fake_root):
    sizes = domain_sizes(get_profile("full"), fake_root)
    assert sizes["isic"]["source"] == "real" and sizes["isic"]["records"] == 6
    assert sizes["isic"]["test"] + sizes["isic"]["train_pool"] == 6 and sizes["isic"]["split"] == "seeded random"
    assert sizes["kvasir"]["test"] == 0 and "stops" in sizes["kvasir"]["problem"]   # none of PraNet's 100 here
    assert sizes["cxr"]["source"] == "missing" and "montgomery" in sizes["cxr"]["problem"]
    runs = {r["what"].split(" (")[0]: r for r in training_runs(get_profile("full"), sizes, [0, 1])}
    nets = runs["trained networks"]
    assert nets["runs"] == 2 * 2 * 1 * 1          # 2 networks x 2 seeds x (isic: budgets within 5 pool images) x 1
    assert "at most 4000 steps" in nets["cap"]


# ---------------------------------------------------------------- the estimate


def test_estimate_scales_each_notebook_by_its_units():
    timings = {"notebooks": {"00_data": 10.0, "06_trained_baselines": 110.0, "09_router": "skipped"},
               "units": {"00_data": 5, "06_trained_baselines": 10}}
    units = {"00_data": (50.0, "images"), "06_trained_baselines": (1000.0, "steps"), "09_router": (3.0, "units")}
    rows, total = est.estimate(units, timings)
    by = {r["notebook"]: r for r in rows}
    assert by["00_data"]["estimate_s"] == 10.0                  # all fixed cost (its time is the shortest)
    assert by["06_trained_baselines"]["estimate_s"] == 10.0 + 100.0 * 1000 / 10
    assert by["09_router"]["estimate_s"] is None and "no rehearsal time" in by["09_router"]["how"]
    assert total == 10.0 + 10010.0


def test_estimate_scales_notebook_06s_training_by_the_networks_own_clock():
    timings = {"notebooks": {"00_data": 10.0, "06_trained_baselines": 110.0}, "units": {"06_trained_baselines": 0.5},
               "training": {"06_trained_baselines": {"seconds": 80.0, "units": 40.0}}, "test_units": 5.0}
    units = {"00_data": (5.0, "images"), "06_trained_baselines": (400.0, "training steps")}
    rows, _ = est.estimate(units, timings, test_here=50.0)
    six = {r["notebook"]: r for r in rows}["06_trained_baselines"]
    # fixed 10 s; the rest beyond training (110 - 80 - 10 = 20 s) by test units (x10); training at 2 s per step
    assert six["estimate_s"] == 10.0 + 20.0 * 10 + 80.0 / 40.0 * 400


def test_training_record_reads_the_runs_this_build_trained(monkeypatch, tmp_path):
    import os

    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    from frozenseg.experiments.baselines import runs_root

    def run(name, seconds, steps, mtime):
        f = runs_root("rehearsal") / "isic" / name / "run.json"
        f.parent.mkdir(parents=True)
        f.write_text(json.dumps({"seconds": seconds, "steps_run": steps, "signature": {"profile": "rehearsal"}}))
        os.utime(f, (mtime, mtime))

    run("a", 12.0, 10, 2000.0)
    run("b", 30.0, 20, 2000.0)
    run("old", 999.0, 99, 10.0)                              # finished by an earlier build: left out
    rec = est.training_record("rehearsal", since=1000.0)["06_trained_baselines"]
    assert rec == {"seconds": 42.0, "units": 30.0}
    assert est.training_record("rehearsal", since=3000.0) == {}


def test_plan_of_a_full_run_on_a_fake_data_root(fake_root, tmp_path):
    text = "\n".join(plan_lines("full", [0], fake_root, timings_path=tmp_path / "absent.json"))
    assert "profile full" in text and str(fake_root) in text
    assert "kvasir_seg" in text and "found    4 images/volumes" in text
    assert "sam_vit_b                weights  found    3 MB" in text
    assert "medsam_vit_b             weights  missing  skips: 08_medical_pretraining" in text
    assert "trained networks (unet_r34, segformer_b2)" in text and "at most 4000 steps" in text
    assert "decoder tunings" in text and "concept annotation loops" in text
    assert "no rehearsal timings" in text and "run make rehearsal" in text

    units = est.work_units(get_profile("full"), domain_sizes(get_profile("full"), fake_root), [0])
    timings = tmp_path / "run_times.json"
    timings.write_text(json.dumps({"profile": "rehearsal", "commit": "abc1234", "device": "cuda",
                                   "notebooks": {nb: 20.0 for nb in units}, "units": {nb: 1.0 for nb in units}}))
    text = "\n".join(plan_lines("full", [0], fake_root, timings_path=timings))
    assert "Estimated length: about" in text and "This is an estimate, not a measurement" in text
    assert "on cuda" in text and "abc1234" in text and "units here" in text


# ---------------------------------------------------------------- the runner


@pytest.fixture
def fake_runner(monkeypatch, tmp_path):
    calls = []

    def run_notebook(name, params, force=False, return_skipped=False):
        calls.append(name)
        print(f"[nb] {name}")
        return (tmp_path / f"{name}.ipynb", False) if return_skipped else tmp_path / f"{name}.ipynb"

    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path / "out"))
    monkeypatch.setattr(runner, "run_notebook", run_notebook)
    monkeypatch.setattr("frozenseg.report.build_report", lambda profile: tmp_path / "index.html")
    return calls


def test_full_run_prints_its_plan_before_the_first_notebook(fake_runner, fake_root, capsys):
    runner.run_all("full", [0], ["00_data", "01_frozen_oracle"], data_root=str(fake_root))
    out = capsys.readouterr().out
    assert out.index("Plan of this run: profile full") < out.index("[nb] 00_data")
    assert "Training runs and their caps" in out and "no rehearsal timings" in out
    times = json.loads((paths.build_dir("full") / "run_times.json").read_text())
    assert times["units"]["06_trained_baselines"] > 0 and times["device"] in ("cpu", "cuda")
    assert times["test_units"] > 0 and times["training"] == {}          # no network trained in this fake run


def test_other_profiles_print_no_plan_but_record_units(fake_runner, capsys):
    runner.run_all("smoke", [0], ["00_data"])
    assert "Plan of this run" not in capsys.readouterr().out
    units = json.loads((paths.build_dir("smoke") / "run_times.json").read_text())["units"]
    smoke = get_profile("smoke")
    assert units["00_data"] == 3 * (smoke.n_test + smoke.n_train) + smoke.phantom_depth * (
        smoke.spleen_test_volumes + smoke.spleen_train_volumes)


def test_a_failed_plan_never_stops_or_loses_a_run(fake_runner, fake_root, monkeypatch, capsys):
    def broken(*a, **k):
        raise ValueError("unreadable header")

    monkeypatch.setattr("frozenseg.plan.printout.plan_lines", broken)
    monkeypatch.setattr("frozenseg.plan.estimate.run_units", broken)
    runner.run_all("full", [0], ["00_data"], data_root=str(fake_root))
    out = capsys.readouterr().out
    assert "could not plan this run (ValueError: unreadable header)" in out and "[nb] 00_data" in out
    times = json.loads((paths.build_dir("full") / "run_times.json").read_text())
    assert times["units"] is None and times["notebooks"]["00_data"] >= 0


def test_a_weights_entry_is_declared_only_for_notebooks_that_reach_the_code_reading_it():
    """Each notebook named in a weight's ``without.notebooks`` imports (through its experiments modules) a module
    that names the entry's key: a declaration cannot drift to a notebook that never reads the weights."""
    import re

    from test_import_graph import LIB, import_graph

    graph = {k.removeprefix("lib."): {v.removeprefix("lib.") for v in vs}
             for k, vs in import_graph(LIB / "frozenseg").items()}

    def reach(start: set[str]) -> set[str]:
        seen, todo = set(), list(start)
        while todo:
            m = todo.pop()
            if m not in seen and m not in ("frozenseg.study", "frozenseg.report", "frozenseg.results"):
                seen.add(m)
                todo += graph.get(m, ())
        return seen

    def source(module: str) -> str:
        path = LIB / (module.replace(".", "/") + ".py")
        return (path if path.is_file() else path.with_suffix("") / "__init__.py").read_text(encoding="utf-8")

    for key, entry in load_manifest().items():
        for nb in entry.without.get("notebooks", ()):
            src = (paths.NOTEBOOKS / f"{nb}.py").read_text(encoding="utf-8")
            mods = {f"frozenseg.experiments.{m}" for m in re.findall(r"from frozenseg\.experiments\.(\w+) import", src)}
            for names in re.findall(r"from frozenseg\.experiments import ([\w, ]+)", src):
                mods |= {f"frozenseg.experiments.{n.split()[0]}" for n in names.split(",") if n.strip()}  # "x as y"
            readers = [m for m in reach(mods) if re.search(rf"[\"']{key}[\"']", source(m))]
            assert readers, f"{key}: {nb} reaches no module that names it; fix its without.notebooks"
