"""The training-free pipeline: routes, gates, keep-best skills, the localizer fallback, the genome, onboarding,
and the result helpers behind notebooks 02-05."""
import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from frozenseg.data.phantoms import make_phantom_case
from frozenseg.errors import ConfigError, DataError
from frozenseg.localizers.base import no_detection
from frozenseg.evaluation.metrics import dice
from frozenseg.pipeline import LOCALIZE, Gate, Pipeline, fit_genome, get_route, load_routes, onboard
from frozenseg.experiments.domain import gap_closed, load_masks, save_masks
from frozenseg.pipeline.genome import MAX_GENOME_LABELS
from frozenseg.pipeline.router import choose_route


@pytest.fixture(scope="module")
def cxr(litemedsam):
    """Eight 128-px CXR phantoms with embeddings: 5 labelled support cases, 3 queries."""
    cases = [make_phantom_case("cxr", i, 128, 0) for i in range(8)]
    return cases, [litemedsam.encode(c.image) for c in cases]


@pytest.fixture(scope="module")
def cxr_pipe(litemedsam, cxr):
    cases, embs = cxr
    return Pipeline(get_route("cxr"), litemedsam).fit(cases[:5], embs[:5])


# ---------------------------------------------------------------- routes and gates

def test_every_shipped_route_loads_and_names_known_pieces():
    routes = load_routes()
    assert {"isic", "spleen", "kvasir", "cxr", "agnostic"} <= set(routes)
    for r in routes.values():
        Pipeline(r, model=None)                  # unknown skills would raise here
        for name, (lo, hi) in r.genome.items():
            assert lo < hi, (r.domain, name)


def test_unknown_route_lists_the_known_ones():
    with pytest.raises(ConfigError, match="cxr"):
        get_route("dermatology")


@pytest.mark.parametrize("text, match", [("x:\n  skills: [tidy]\n", "needs 'localizer'"),
                                         ("x:\n  localizer: {name: static_box}\n  colour: 3\n", "colour")])
def test_malformed_routes_file_names_the_file(tmp_path, text, match):
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_routes(path)
    assert str(path) in str(err.value)


def test_unknown_skill_is_a_clear_error(litemedsam):
    r = get_route("cxr")
    r = type(r)(**{**r.__dict__, "skills": ["self_reprompt", "magic"]})
    with pytest.raises(ConfigError, match="magic"):
        Pipeline(r, litemedsam)


def test_gate_rejects_unknown_cues_and_zero_weights():
    with pytest.raises(ConfigError, match="shine"):
        Gate({"shine": 1.0})
    with pytest.raises(ConfigError, match="positive"):
        Gate({"atlas": 0.0, "colour": 0.0})


# ---------------------------------------------------------------- running a route

def test_run_gives_one_stage_per_skill_and_keep_best_never_lowers_the_gate(cxr_pipe, cxr):
    cases, embs = cxr
    for c, e in zip(cases[5:], embs[5:]):
        tr = cxr_pipe.run(c.image, e)
        assert [s.name for s in tr.stages] == [LOCALIZE, *cxr_pipe.route.skills]
        gates = [s.gate for s in tr.stages]
        assert all(b >= a - 1e-9 for a, b in zip(gates, gates[1:])), gates
        for prev, st in zip(tr.stages, tr.stages[1:]):
            if not st.accepted:
                assert np.array_equal(st.mask, prev.mask), st.name
            else:
                assert st.fired and st.gate > prev.gate
        assert tr.decoder_calls >= 1 and tr.flag == ""
        assert dice(tr.final, c.mask) > 0.6, "the CXR route should find the lungs on an easy phantom"


def test_a_localizer_that_finds_nothing_falls_back_to_the_atlas_box_flagged(cxr_pipe, cxr, monkeypatch):
    cases, embs = cxr
    monkeypatch.setattr(cxr_pipe.localizer, "locate", lambda image, emb: no_detection("test"))
    tr = cxr_pipe.run(cases[6].image, embs[6])
    assert tr.flag == "localizer_fallback_atlas"
    assert tr.localization["flag"] == "no_detection"
    assert tr.final.any(), "the fallback box is decoded, not a silent empty mask"


def test_a_localizer_may_add_point_prompts_or_hand_over_its_own_mask(cxr_pipe, cxr, monkeypatch):
    from frozenseg.localizers.base import Localization

    cases, embs = cxr
    c, e = cases[6], embs[6]
    box = np.array([10.0, 10.0, 100.0, 110.0])
    pts, labels = np.array([[40.0, 60.0], [5.0, 5.0]]), np.array([1, 0])
    monkeypatch.setattr(cxr_pipe.localizer, "locate", lambda image, emb: Localization(box, points=pts, point_labels=labels))
    frame = cxr_pipe.frame(c.image, e)
    with_points = cxr_pipe.run(c.image, e, frame=frame).stages[0].mask
    grown = cxr_pipe.localize(frame)[1]
    assert np.array_equal(with_points, frame.decode(box=grown, points=pts, labels=labels).mask)
    own = np.zeros(c.mask.shape, bool)
    own[20:40, 30:50] = True
    monkeypatch.setattr(cxr_pipe.localizer, "locate", lambda image, emb: Localization(box, mask=own))
    assert np.array_equal(cxr_pipe.run(c.image, e).stages[0].mask, own)


def test_fit_needs_labelled_support(litemedsam):
    with pytest.raises(DataError, match="support set is empty"):
        Pipeline(get_route("cxr"), litemedsam).fit([], [])


# ---------------------------------------------------------------- the genome

def test_genome_refuses_more_than_forty_labels(cxr_pipe, cxr):
    cases, embs = cxr
    many = [cases[0]] * (MAX_GENOME_LABELS + 1)
    with pytest.raises(ConfigError, match=str(MAX_GENOME_LABELS)):
        fit_genome(cxr_pipe, many, [embs[0]] * len(many), budget=2)


def test_genome_fit_stays_in_bounds_and_never_ends_worse_than_it_started(litemedsam, cxr):
    cases, embs = cxr
    pipe = Pipeline(get_route("cxr"), litemedsam).fit(cases[:5], embs[:5])
    rec = fit_genome(pipe, cases[:5], embs[:5], budget=6, seed=0)
    spec = pipe.route.genome
    assert set(rec["params"]) == set(spec)
    for k, v in rec["params"].items():
        assert spec[k][0] - 1e-9 <= v <= spec[k][1] + 1e-9, k
        assert pipe.params[k] == pytest.approx(v)
    assert rec["fit_dice"] >= rec["start_dice"] - 1e-9
    assert 1 <= rec["evals"] <= 6 + 2
    achieved = np.mean([dice(pipe.run(c.image, e).final, c.mask) for c, e in zip(cases[:5], embs[:5])])
    assert achieved == pytest.approx(rec["fit_dice"], abs=1e-6), "the pipeline is left at the reported values"


def test_genome_localizes_each_support_case_without_itself(litemedsam, cxr, monkeypatch):
    """Leave one out: a genome case that is also a support is localized by a localizer fitted on the other supports
    only (the static box of CXR is the mean of the support boxes, so a self-match would pull it toward the case)."""
    from frozenseg.localizers.static_box import StaticBoxLocalizer as StaticBox

    cases, embs = cxr
    fitted_on = []
    real_fit = StaticBox._fit

    def spy(self, support, embeddings):
        fitted_on.append({c.case_id for c in support})
        return real_fit(self, support, embeddings)

    monkeypatch.setattr(StaticBox, "_fit", spy)
    pipe = Pipeline(get_route("cxr"), litemedsam).fit(cases[:4], embs[:4])
    rec = fit_genome(pipe, cases[:5], embs[:5], budget=2, seed=0, support=cases[:4], support_embeddings=embs[:4])
    ids = [c.case_id for c in cases[:4]]
    assert rec["loo_cases"] == 4, "the four supports among the five genome cases are each left out once"
    assert fitted_on[0] == set(ids) and all(set(ids) - {i} in fitted_on for i in ids)


def test_pipeline_budgets_draw_supports_and_genome_cases_from_the_networks_n_label_draw(cxr):
    from frozenseg.data.splits import subsample_train
    from frozenseg.experiments.domain import label_sets

    cases, _ = cxr
    s = {"n_support": 3, "n_genome": 5}
    for n in (2, 4, 6):
        draw = {c.case_id for c in subsample_train(cases, n, seed=1)}
        sup, gen = label_sets(cases, n, 1, s)
        assert {c.case_id for c in sup + gen} <= draw, f"N={n}: every label lies inside the networks' draw"
        assert len(sup) == min(3, n) and len(gen) == min(5, n)


# ---------------------------------------------------------------- router and onboarding

def test_router_scores_candidates_on_every_label_with_their_spread(litemedsam, cxr):
    from frozenseg.pipeline.router import cv_dice, folds, scores_table

    cases, embs = cxr
    assert sorted(i for f in folds(6, 3, 0) for i in f) == list(range(6)), "every label held out exactly once"
    cv = cv_dice(get_route("cxr"), litemedsam, cases[:6], embs[:6], k=3)
    assert sorted(cv.case_id) == sorted(c.case_id for c in cases[:6]) and cv.fold.nunique() == 3
    route, scores = choose_route(litemedsam, cases[:6], embs[:6], candidates=["cxr", "agnostic"], folds_k=3,
                                 genome_budget=2, finalists=1)
    screen, final = scores[scores.stage == "screen"], scores[scores.stage == "final"]
    assert set(screen.route) == {"cxr", "agnostic"} and len(final) == 1
    assert final.route.iloc[0] == screen.loc[screen["mean"].idxmax(), "route"], "the screen's best is refitted"
    assert scores.chosen.sum() == 1 and route.domain == scores.loc[scores.chosen, "route"].iloc[0]
    assert scores["mean"].between(0, 1).all() and scores.sd.notna().all() and (scores.cases == 6).all()
    assert "±" in scores_table(scores)["held-out Dice"].iloc[0]
    with pytest.raises(ConfigError, match="at least 3"):
        choose_route(litemedsam, cases[:2], embs[:2], candidates=["cxr"])


def test_routes_with_one_definition_under_two_names_are_scored_once(monkeypatch):
    """isic and kvasir (and their kNN variants) are the same route under two names: the router cross-validates
    each definition once, lists the twin with the same scores, and picks finalists among distinct definitions."""
    import pandas as pd

    from frozenseg.pipeline import router

    assert router._definition(get_route("isic")) == router._definition(get_route("kvasir"))
    assert router._definition(get_route("isic")) != router._definition(get_route("isic_knn"))
    seen = []

    def fake_cv(route, model, cases, embs, k, budget, seed):
        seen.append((route.domain, budget))
        score = {"isic": 0.8, "isic_knn": 0.7, "agnostic": 0.6}[route.domain]
        return pd.DataFrame({"fold": [0, 1, 2], "case_id": ["a", "b", "c"], "dice": [score] * 3})

    monkeypatch.setattr(router, "cv_dice", fake_cv)
    monkeypatch.setattr(router, "tqdm", lambda *a, **k: __import__("tqdm").tqdm(disable=True))
    scores = router.route_scores(None, [0, 1, 2], [0, 1, 2], ["isic", "kvasir", "isic_knn", "kvasir_knn", "agnostic"],
                                 folds_k=3, genome_budget=1, finalists=2)
    assert seen == [("isic", 0), ("isic_knn", 0), ("agnostic", 0), ("isic", 1), ("isic_knn", 1)]
    screen = scores[scores.stage == "screen"].set_index("route")
    assert screen.loc["kvasir", "mean"] == screen.loc["isic", "mean"] and screen.loc["kvasir", "same_as"] == "isic"
    assert set(scores[scores.stage == "final"].route) == {"isic", "kvasir", "isic_knn", "kvasir_knn"}
    assert scores.chosen.sum() == 1 and scores.loc[scores.chosen, "route"].iloc[0] == "isic"
    assert "kvasir (= isic)" in set(router.scores_table(scores).route)


def test_onboard_a_new_domain_from_a_folder(litemedsam, cxr, tmp_path):
    cases, _ = cxr
    for sub in ("images", "masks"):
        (tmp_path / "lungs" / sub).mkdir(parents=True)
    for c in cases[:6]:
        Image.fromarray(c.image).save(tmp_path / "lungs" / "images" / f"{c.case_id}.png")
        Image.fromarray(c.mask.astype(np.uint8) * 255).save(tmp_path / "lungs" / "masks" / f"{c.case_id}.png")
    pipe, scores = onboard(tmp_path / "lungs", litemedsam, n_labels=5, route="cxr")
    assert scores.empty and pipe.route.domain == "lungs" and pipe.route.skills == get_route("cxr").skills
    q = cases[7]
    assert dice(pipe.run(q.image, litemedsam.encode(q.image)).final, q.mask) > 0.5


# ---------------------------------------------------------------- result helpers

def test_gap_closed_is_the_fraction_of_naive_to_oracle():
    df = pd.DataFrame({"domain": "d", "seed": 0, "stage": ["naive", "deployed", "oracle"], "dice": [0.4, 0.7, 0.8]})
    assert gap_closed(df)["gap closed"].iloc[0] == pytest.approx(0.75)


def test_masks_round_trip_bit_packed(tmp_path):
    rng = np.random.default_rng(0)
    masks = {"a": rng.random((13, 7)) > 0.5, "b": rng.random((3, 5, 9)) > 0.3}
    save_masks(masks, "02_isic", "smoke", "isic", 0)
    back = load_masks("02_isic", "smoke", "isic", 0)
    assert set(back) == {"a", "b"}
    for k in masks:
        assert back[k].dtype == bool and np.array_equal(back[k], masks[k])
    assert load_masks("02_isic", "smoke", "isic", 9) == {}


def test_powell_search_returns_the_best_point_it_evaluated():
    from frozenseg.pipeline.genome import powell_search

    lo, hi = np.zeros(2), np.array([1.0, 2.0])
    for budget in (1, 3, 5, 9):
        rec = powell_search(lambda x: float((x[0] - 0.8) ** 2 + (x[1] - 0.3) ** 2), ["a", "b"], lo, hi,
                            np.array([0.1, 0.9]), budget)
        assert rec["fit_dice"] == pytest.approx(max(rec["history"]))
        assert rec["fit_dice"] >= rec["start_dice"] and rec["evals"] == len(rec["history"])
        assert 0 <= rec["params"]["a"] <= 1 and 0 <= rec["params"]["b"] <= 2


def _two_seed_rows() -> pd.DataFrame:
    """Deployed, naive, oracle and one skill stage of 4 units x 2 seeds (per-seed deployed means 0.4 and 0.6)."""
    rows = []
    for seed, dep in ((0, 0.4), (1, 0.6)):
        for i in range(4):
            base = {"domain": "d", "seed": seed, "case_id": f"c{i}", "unit": "case", "n_labels": 10,
                    "labels_used": 10, "route": "d", "fired": True, "accepted": True}
            rows += [{**base, "stage": "localize", "stage_index": 0, "dice": dep - 0.1, "hd95": np.nan},
                     {**base, "stage": "deployed", "stage_index": 1, "dice": dep, "hd95": 2.0 + i if i else np.nan,
                      "hd95_unit": "px"},
                     {**base, "stage": "naive", "stage_index": -1, "dice": 0.2, "hd95": np.nan},
                     {**base, "stage": "oracle", "stage_index": -2, "dice": 0.9, "hd95": 1.0}]
    return pd.DataFrame(rows)


def test_section_tables_summarise_across_seeds_through_the_evaluation_core(monkeypatch):
    """Ablation, gap and budget tables: the one seed summary (sd with n - 1), HD95 with its missing units."""
    from frozenseg import evaluation as ev
    from frozenseg.experiments.domain import ablation_table
    from frozenseg.experiments.domain_report import budget_table, gap_table

    calls = []
    for name in ("scored_units", "seed_summary", "seed_cell", "mean_sd", "hd95_summary"):
        real = getattr(ev, name)
        monkeypatch.setattr(ev, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    df = _two_seed_rows()
    sd = f"{np.std([0.4, 0.6], ddof=1):.3f}"
    abl = ablation_table(df).set_index("stage")
    assert abl.loc["deployed", "Dice"] == f"0.500 ± {sd}" and abl.loc["deployed", "median HD95"] == \
        "median 4.0 px (2 of 8 without a boundary)"
    assert gap_table(df)["deployed"].iloc[0] == f"0.500 ± {sd}"
    assert budget_table(df)["deployed Dice"].iloc[0] == f"0.500 ± {sd}"
    assert {"scored_units", "seed_summary", "seed_cell", "mean_sd", "hd95_summary"} <= set(calls)


def test_a_2d_genome_fit_is_cached_under_the_key_its_caller_gives(litemedsam, cxr):
    """fit_genome through the one cached fit: the second call with the same key reads the record, sets the same
    parameters and evaluates nothing."""
    cases, embs = cxr
    pipe = Pipeline(get_route("cxr"), litemedsam).fit(cases[:4], embs[:4])
    key = {"test": "2d cache", "cases": [c.case_id for c in cases[:4]]}
    rec = fit_genome(pipe, cases[:4], embs[:4], budget=2, cache=key, extra={"domain": "cxr"})
    assert not rec["cached"] and rec["domain"] == "cxr" and rec["evals"] >= 1
    again = Pipeline(get_route("cxr"), litemedsam).fit(cases[:4], embs[:4])
    back = fit_genome(again, cases[:4], embs[:4], budget=2, cache=key)
    assert back["cached"] and back["params"] == rec["params"] and back["history"] == rec["history"]
    assert all(again.params[k] == v for k, v in rec["params"].items())


# ---------------------------------------------------------------- the house: the method package's shape

PIPELINE = Path(__file__).resolve().parents[1] / "lib" / "frozenseg" / "pipeline"
# the method modules of this package (router and the notebook code beside them are checked where they live)
METHOD = ("core", "frame", "gates", "genome", "prior", "skills")


def _module(path: Path) -> str:
    rel = path.relative_to(PIPELINE.parent.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module name, imported inside a function) of every import in one module."""
    tree = ast.parse(path.read_text())
    here = _module(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in inside) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            out.append((base, id(node) in inside))
            out += [(f"{base}.{a.name}", id(node) in inside) for a in node.names]
    return out


def _method_files() -> list[Path]:
    """The method modules, the volume pipeline's included (a package, or the one file it once was)."""
    volume = sorted(PIPELINE.glob("volume.py")) + sorted((PIPELINE / "volume").glob("*.py"))
    return [PIPELINE / f"{m}.py" for m in METHOD] + volume


def test_no_file_of_the_pipeline_package_is_over_500_lines():
    sizes = {str(p.relative_to(PIPELINE)): len(p.read_text().splitlines()) for p in PIPELINE.rglob("*.py")}
    assert max(sizes.values()) <= 500, {k: v for k, v in sizes.items() if v > 500}
    assert (PIPELINE / "volume" / "__init__.py").is_file() and not (PIPELINE / "volume.py").exists()


def test_pipeline_modules_import_no_experiment_report_or_notebook_code():
    """No module of the package imports the experiments, the report or notebooks; the method modules also draw no
    figure and set up no study (that is the experiments' job)."""
    for path in PIPELINE.rglob("*.py"):
        bad = [m for m, _ in _imports(path)
               if m.startswith(("frozenseg.experiments", "frozenseg.report", "frozenseg.runner", "notebooks"))]
        assert not bad, (path.name, bad)
    for path in _method_files():
        bad = [m for m, _ in _imports(path)
               if m.startswith(("matplotlib", "IPython", "frozenseg.viz", "frozenseg.study", "frozenseg.results"))]
        assert not bad, (path.name, bad)


def test_the_spleen_experiment_lives_in_the_experiments_room():
    from frozenseg.experiments import spleen
    from frozenseg.pipeline import volume

    for name in ("run_spleen", "fit_volume_pipeline", "volume_ablation_table", "volume_genome_table",
                 "volume_gap_table", "slice_dice_rows", "gallery_figure"):
        assert hasattr(spleen, name) and not hasattr(volume, name), name


def test_method_modules_import_at_module_level_and_sit_in_no_import_circle():
    """A function-level import hides a circle: the method modules have none, and no circle of imports (at any
    level) among the package's modules passes through one of them."""
    for path in _method_files():
        hidden = [m for m, inside in _imports(path) if inside and m.startswith("frozenseg")]
        assert not hidden, (path.name, hidden)
    files = {_module(p): p for p in PIPELINE.rglob("*.py")}
    # a module's own parent packages are imported before it whatever it says, so they are no edge of a circle
    graph = {m: {t for t, _ in _imports(p) if t in files and not (m + ".").startswith(t + ".")} for m, p in files.items()}

    def reach(m):
        seen, todo = set(), [m]
        while todo:
            for t in graph[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return seen

    method = {_module(p) for p in _method_files()}
    for m in method:
        back = {t for t in reach(m) if m in reach(t)}
        assert not back, f"{m} is in an import circle with {sorted(back)}"


def test_genome_and_route_choice_keys_hold_the_resolved_features_and_the_images(tmp_path, monkeypatch):
    """A cached genome (or route choice) is reused only for the same feature space and the same images: features
    'auto' resolving to DINOv2 (its weights added) or to SAM, and the same case ids at another size, are misses."""
    from dataclasses import replace

    import torch
    from transformers import Dinov2Config, Dinov2Model

    from frozenseg.config import get_profile
    from frozenseg.experiments.domain import genome_depends_on
    from frozenseg.experiments.route_choice import choice_key, choice_settings
    from frozenseg.pipeline.genome import cache_key

    class Model:
        cache_id = "stand-in"

    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    route, rs = get_route("kvasir"), choice_settings(get_profile("smoke"))
    small = [make_phantom_case("kvasir", i, 64, 0) for i in range(4)]
    large = [make_phantom_case("kvasir", i, 96, 0) for i in range(4)]
    assert [c.case_id for c in small] == [c.case_id for c in large]

    def keys(cases, r=route):
        return cache_key(genome_depends_on(r, Model(), cases[:2], cases[2:], 2)), choice_key([r], Model(), cases, rs, 0)

    on_sam = keys(small)
    assert on_sam == keys(small), "the same inputs: the same keys"
    assert len({on_sam[0], keys(large)[0]}) == 2 and len({on_sam[1], keys(large)[1]}) == 2, "another size: a miss"
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=14)).save_pretrained(tmp_path / "weights" / "dinov2-small")
    on_dino = keys(small)
    assert on_dino[0] != on_sam[0] and on_dino[1] != on_sam[1], "features 'auto' now resolves to DINOv2: a miss"
    assert keys(small, replace(route, localizer={**route.localizer, "features": "dinov2"})) != on_sam
    sam = replace(route, localizer={**route.localizer, "features": "sam"})
    assert keys(small, sam)[0] != on_dino[0], "an explicit 'sam' route is its own fit"


# ---------------------------------------------------------------- concept search as a route


def test_concept_route_runs_through_the_pipeline_with_its_own_mask(litemedsam, cxr):
    from frozenseg.localizers import make_localizer
    from frozenseg.pipeline.core import Route

    cases, embs = cxr
    shipped = get_route("concept")
    assert shipped.localizer["name"] == "concept"
    route = Route("concept", {**shipped.localizer, "epochs": 4}, skills=list(shipped.skills))
    pipe = Pipeline(route, litemedsam).fit(cases[:5], embs[:5])
    loc = pipe.localizer.locate(cases[6].image, embs[6])
    assert loc.found and loc.mask is not None and loc.mask.any(), "the concept hands over a non-empty mask"
    ys, xs = np.nonzero(loc.mask)
    assert np.allclose(loc.box, [xs.min(), ys.min(), xs.max(), ys.max()]), "the box is the mask's box"
    tr = pipe.run(cases[6].image, embs[6])
    assert np.array_equal(tr.stages[0].mask, loc.mask), "the localize stage takes the concept's own mask"
    assert dice(tr.final, cases[6].mask) > 0.5
    rnd = Pipeline(Route("concept", {**route.localizer, "init": "random"}), litemedsam).fit(cases[:5], embs[:5])
    assert not rnd.localizer.locate(cases[6].image, embs[6]).found, "random tokens collapse at this short budget"
    with pytest.raises(ConfigError, match="embeddings"):
        make_localizer("concept", model=litemedsam).fit(cases[:2], None)


def test_concept_is_a_router_candidate_for_folders():
    from frozenseg.config import SMALL_PIPELINE

    assert "concept" in SMALL_PIPELINE["router_candidates"]
