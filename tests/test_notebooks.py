"""Every numbered notebook runs headlessly in smoke mode; the report builds; reruns give identical tables."""
import json

import pandas as pd
import pytest

from frozenseg import paths
from frozenseg.results import load_results
from frozenseg.runner import notebook_sources, run_all, run_notebook

pytestmark = pytest.mark.slow
SEEDS = [0]                 # most notebooks run with one seed (CI time); data and oracle with TWO_SEEDS
TWO_SEEDS = [0, 1]


@pytest.fixture(scope="module")
def smoke_report():
    """Run every notebook once in the smoke profile: data and oracle sections with two seeds, the rest with one."""
    first = ["00_data", "01_frozen_oracle"]
    run_all("smoke", TWO_SEEDS, notebooks=first)
    return run_all("smoke", SEEDS, notebooks=[n for n in notebook_sources() if n not in first])


def test_every_notebook_executes_and_publishes(smoke_report):
    out = paths.build_dir("smoke")
    for name in notebook_sources():
        assert (out / "notebooks" / f"{name}.ipynb").is_file(), name
        assert (out / "notebooks" / f"{name}.html").is_file(), name
        record = json.loads((out / "artifacts" / f"{name}.json").read_text())
        assert record["profile"] == "smoke"
        assert record["seeds"] == (TWO_SEEDS if name in ("00_data", "01_frozen_oracle") else SEEDS), name
        assert record["source"] == "phantom (isic, spleen, kvasir, cxr)" and "LiteMedSAM" in record["model"]


def test_report_lists_every_built_section(smoke_report):
    html = smoke_report.read_text()
    for title in ("Data", "Frozen oracles", "Gallery"):
        assert title in html
    assert "01_frozen_oracle__sensitivity.png" in html and "00_data__examples.png" in html
    assert "Pending" not in html, "every section's notebook ran, so none should be listed as pending"


def test_oracle_results_are_tidy_and_cover_every_seed(smoke_report):
    df = load_results("01_frozen_oracle", "smoke")
    assert set(df.seed) == set(TWO_SEEDS)
    assert set(df.domain) == {"isic", "spleen", "kvasir", "cxr"}
    scored = df[df.unit.isin(["case", "volume"])]
    assert scored.dice.between(0, 1).all() and not scored.dice.isna().any()
    gt = scored[scored.method == "gt_box"]
    assert gt.groupby("domain").dice.mean().min() > 0.5, "the GT-box oracle should segment phantoms well"
    loose = scored[scored.method == "loosen_1.5"]
    assert loose.dice.mean() < gt.dice.mean(), "a loose box should hurt"


def test_rerun_with_same_seeds_gives_identical_tables(smoke_report):
    table = paths.build_dir("smoke") / "tables" / "01_frozen_oracle__oracle_dice.csv"
    before_csv = table.read_text()
    before = load_results("01_frozen_oracle", "smoke")
    run_notebook("01_frozen_oracle", {"profile": "smoke", "seeds": TWO_SEEDS}, force=True)
    assert table.read_text() == before_csv
    pd.testing.assert_frame_equal(load_results("01_frozen_oracle", "smoke"), before)


def test_up_to_date_notebook_is_skipped(smoke_report, capsys):
    run_notebook("00_data", {"profile": "smoke", "seeds": TWO_SEEDS})
    assert "[skip] 00_data" in capsys.readouterr().out


@pytest.mark.browser
def test_built_smoke_report_renders_in_chromium(smoke_report, tmp_path):
    """The report the notebooks built loads in headless Chromium with every image rendered."""
    import re

    import browser

    body = re.search(r"<body[^>]*>", browser.dump_dom(smoke_report)).group(0)
    broken = re.search(r'data-broken-images="(\d+)"', body)
    images = re.search(r'data-images="(\d+)"', body)
    assert broken and broken.group(1) == "0", body
    assert images and int(images.group(1)) >= 2, body
    png = browser.screenshot(smoke_report, tmp_path / "smoke_report.png")
    assert png.stat().st_size > 10_000


def test_every_method_scores_spleen_on_every_slice_of_the_same_volumes(smoke_report):
    """The fair protocol: each notebook that scores spleen does so per 3D volume over every slice of the same test
    volumes (organ-free slices included), so a false positive anywhere counts for every method."""
    from frozenseg.config import get_profile
    from frozenseg.data import load_domain

    data = load_domain("spleen", get_profile("smoke"))
    assert any(not c.mask.any() for c in data.test), "the spleen test units include slices without spleen"
    depth = {v: vol.image.shape[2] for v, vol in data.volumes.items()}
    seen = {}
    for nb in ("01_frozen_oracle", "03_spleen", "06_trained_baselines", "07_fewshot_decoder", "11_concept_search"):
        df = load_results(nb, "smoke")
        vol = df[(df.domain == "spleen") & (df.unit == "volume") & df.dice.notna()]
        assert len(vol), f"{nb} has no per-volume spleen rows"
        assert set(vol.volume_id) == set(depth), nb
        assert (vol.slices_scored == vol.volume_id.map(depth)).all(), f"{nb} scored a partial slice set"
        seen[nb] = set(vol.volume_id)
    assert len({frozenset(v) for v in seen.values()}) == 1


def test_every_comparison_shows_the_labels_each_method_used(smoke_report):
    out = paths.build_dir("smoke") / "tables"
    head = pd.read_csv(out / "06_trained_baselines__headline.csv")
    assert {"N", "NN labels used", "pipeline labels used"} <= set(head.columns)
    pipe = load_results("02_isic", "smoke")
    dep = pipe[pipe.stage == "deployed"]
    assert set(dep.n_labels) == {5, 10} and (dep.labels_used <= dep.n_labels).all()
    cmp = pd.read_csv(out / "11_concept_search__vs_methods.csv")
    assert {"GT-box oracle", "training-free pipeline", "few-shot tuned decoder", "concept search"} <= set(cmp.family)
    fewshot = load_results("07_fewshot_decoder", "smoke")
    assert {"gt_box", "localizer", "mean_box"} <= set(fewshot.arm)


# The functions of frozenseg.evaluation that decide which rows are units and how they are summarised.
ROW_RULES = ("scored_units", "test_units", "negatives")
SUMMARIES = ("seed_summary", "per_seed", "seed_cell", "mean_sd", "unit_interval", "mean_interval",
             "spearman_interval", "cluster_bootstrap", "select_best", "hd95_summary")


def _summary_paths(profile: str = "smoke") -> dict:
    """Per notebook (and the README): a call of the functions its tables are made with, on the smoke results."""
    from frozenseg.experiments import baselines_report, pretraining
    from frozenseg.config import DOMAINS
    from frozenseg.experiments.data import cards_table
    from frozenseg.experiments.fewshot import summarize_fewshot
    from frozenseg.experiments.oracle import sensitivity_summary, summarize_oracle
    from frozenseg.experiments import annotate_loop, gallery
    from frozenseg.experiments import concept_report
    from frozenseg.experiments import gate_validity
    from frozenseg.experiments.router import route_scores_table, routing_table
    from frozenseg.experiments.domain import ablation_table
    from frozenseg.experiments.domain_report import budget_table, comparison_table, gap_table
    from frozenseg.experiments.spleen import volume_ablation_table, volume_gap_table
    from frozenseg.readme import sample_rows
    from frozenseg.study import setup

    r = lambda nb: load_results(nb, profile)  # noqa: E731
    section = lambda nb: (budget_table(r(nb)), ablation_table(r(nb)), gap_table(r(nb)),  # noqa: E731
                          comparison_table(r(nb)))

    def baselines():
        pipe, origin = baselines_report.pipeline_per_seed(profile, DOMAINS)
        return baselines_report.headline(r("06_trained_baselines"), pipe, origin,
                                         baselines_report.decoder_per_seed(profile),
                                         peers=baselines_report.peers_per_seed(profile, DOMAINS))

    def router():
        df = r("09_router")
        return routing_table(df[df.part == "routing"]), route_scores_table(df[df.part == "routing"])

    def concept():
        df = r("11_concept_search")
        return (concept_report.dice_curves(df), concept_report.correlation_table(df, n_boot=50),
                concept_report.comparison_table(concept_report.method_rows(profile, DOMAINS, df)))

    def data_cards():
        study = setup(profile=profile, seeds=SEEDS, verbose=False)
        return cards_table({d: study.data(d) for d in study.domains})

    return {"00_data": data_cards,
            "01_frozen_oracle": lambda: (summarize_oracle(r("01_frozen_oracle")),
                                         sensitivity_summary(r("01_frozen_oracle"))),
            "02_isic": lambda: section("02_isic"),
            "03_spleen": lambda: (volume_ablation_table(r("03_spleen")), volume_gap_table(r("03_spleen")),
                                  budget_table(r("03_spleen"))),
            "04_kvasir": lambda: section("04_kvasir"), "05_cxr": lambda: section("05_cxr"),
            "06_trained_baselines": baselines,
            "07_fewshot_decoder": lambda: summarize_fewshot(r("07_fewshot_decoder")),
            "08_medical_pretraining": lambda: pretraining.pretraining_table(r("08_medical_pretraining"),
                                                                            pretraining.model_status()),
            "09_router": router,
            "10_gate_validity": lambda: gate_validity.correlation_table(r("10_gate_validity"), n_boot=50, seed=0),
            "11_concept_search": concept,
            "12_gallery": lambda: (gallery.pick_cases(r("02_isic")), gallery.failure_table(r("04_kvasir"))),
            "13_annotate_loop": lambda: (annotate_loop.curve_table(r("13_annotate_loop")),
                                         annotate_loop.gain_table(r("13_annotate_loop"))),
            "README": lambda: sample_rows(profile)}


def test_every_table_is_made_by_the_evaluation_core(smoke_report, monkeypatch):
    """Each notebook's summary path (and the README's table) decides which rows count and summarises them through
    frozenseg.evaluation: run on this session's smoke results with every evaluation function spied on."""
    from frozenseg import evaluation as ev

    calls: list[str] = []
    for name in ROW_RULES + SUMMARIES:
        real = getattr(ev, name)
        monkeypatch.setattr(ev, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    paths_ = _summary_paths()
    assert set(paths_) == set(notebook_sources()) | {"README"}, "a notebook without a known summary path"
    for name, run in paths_.items():
        calls.clear()
        run()
        if name != "10_gate_validity":      # its rows are a test image's candidate masks, not test units
            assert set(calls) & set(ROW_RULES), f"{name}: no rows-that-count rule of frozenseg.evaluation was called"
        if name not in ("00_data", "12_gallery"):       # a data card counts units; the gallery picks cases to show
            assert set(calls) & set(SUMMARIES), f"{name}: its table is not summarised by frozenseg.evaluation"


# A reader of an executed notebook sees at most this many lines of stderr under one cell (a warning and its source
# line take two); progress bars leave one summary line per loop on stdout, never a block of refreshes.
MAX_STDERR_LINES = 3
WIDGET = "application/vnd.jupyter.widget-view+json"


def stderr_blocks(ipynb) -> list[tuple[int, int, str]]:
    """(cell index, lines, first line) of each cell's stderr as rendered: its stderr stream outputs joined, split on
    newlines and carriage returns (each bar refresh is a line), blank lines dropped."""
    import re

    import nbformat

    nb = nbformat.read(str(ipynb), as_version=4)
    blocks = []
    for i, cell in enumerate(nb.cells):
        text = "".join(o.get("text", "") for o in cell.get("outputs", [])
                       if o.get("output_type") == "stream" and o.get("name") == "stderr")
        lines = [ln for ln in re.split(r"[\r\n]", text) if ln.strip()]
        if lines:
            blocks.append((i, len(lines), lines[0][:160]))
    return blocks


def test_stderr_blocks_count_bar_refreshes_as_lines(tmp_path):
    """The rule the notebook check applies: a tqdm bar's carriage-return refreshes are lines, a summary is not."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    bar = nbformat.v4.new_code_cell("loop()")
    bar.outputs = [nbformat.v4.new_output("stream", name="stderr", text=f"\rtoy:  {k}0%|") for k in range(10)]
    quiet = nbformat.v4.new_code_cell("loop()")
    quiet.outputs = [nbformat.v4.new_output("stream", name="stdout", text="toy: 10/10 it in 00:01 (9it/s)\n")]
    nb.cells = [bar, quiet]
    nbformat.write(nb, str(tmp_path / "toy.ipynb"))
    assert stderr_blocks(tmp_path / "toy.ipynb") == [(0, 10, "toy:  00%|")]


def test_executed_notebooks_show_no_long_stderr_block_and_no_widget(smoke_report):
    """What a reader of report/build/smoke/notebooks sees: no cell with more than a few stderr lines (bar refreshes,
    known third-party warnings), and no progress widget (a headless run has no widget state to show); the rendered
    HTML carries the same."""
    import re

    out = paths.build_dir("smoke") / "notebooks"
    for name in notebook_sources():
        ipynb = out / f"{name}.ipynb"
        long = [b for b in stderr_blocks(ipynb) if b[1] > MAX_STDERR_LINES]
        assert not long, f"{name}: cells with a long stderr block (cell, lines, first line): {long}"
        assert WIDGET not in ipynb.read_text(), f"{name}: a progress widget in a headless run"
        for cell in re.split(r'<div class="jp-Cell ', (out / f"{name}.html").read_text()):
            pink = re.findall(r'data-mime-type="application/vnd\.jupyter\.stderr"[^>]*>\s*<pre>(.*?)</pre>', cell, re.S)
            lines = [ln for ln in re.split(r"[\r\n]", "".join(pink)) if ln.strip()]
            assert len(lines) <= MAX_STDERR_LINES, f"{name}.html: a cell with {len(lines)} stderr lines: {lines[:3]}"
