"""The evaluation core: test units, native-resolution scoring, which rows count, seed summaries, intervals and
selection on validation data."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from frozenseg import evaluation as ev
from frozenseg.data import load_folder
from frozenseg.data.native import native_mask
from frozenseg.data.types import DomainData
from frozenseg.errors import ConfigError


def _write_pair(folder, name, size=(1000, 800), fg=True, seed=0):
    """An image and a mask with thin structures (lost when shrunk) at ``size`` (rows, cols)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    mask = np.zeros(size, np.uint8)
    if fg:
        mask[200:700, 150:600] = 255
        mask[100:900:7, 50:750] = 255        # one-pixel stripes every 7 rows: shrinking changes them
    Image.fromarray(img).save(folder / "images" / f"{name}.png")
    Image.fromarray(mask).save(folder / "masks" / f"{name}.png")
    return mask > 0


def test_prediction_scored_at_native_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_CACHE", str(tmp_path / "cache"))
    truth = _write_pair(tmp_path / "f", "big")
    case = load_folder(tmp_path / "f", "mine", max_side=512)[0]
    assert case.mask.shape == (512, 410) and case.meta["orig_size"] == (1000, 800)
    native = native_mask(case)
    assert native.shape == (1000, 800) and np.array_equal(native, truth)
    got = ev.score_case(case.mask, case)                 # the shrunk ground truth as a prediction
    expect = ev.dice(ev.upsample(case.mask, (1000, 800)), truth)
    assert got["dice"] == pytest.approx(expect)
    assert got["dice"] < 0.99, "at 1000 px the shrunk mask misses the thin stripes"
    assert ev.dice(case.mask, case.mask) == 1.0, "scored at the loaded size it would look perfect"
    assert got["hd95_unit"] == "px" and not got["negative"]
    assert np.array_equal(native_mask(case), truth), "read back from the cache"


def test_native_scoring_is_identity_for_unshrunk_cases(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_CACHE", str(tmp_path / "cache"))
    _write_pair(tmp_path / "f", "small", size=(300, 200))
    case = load_folder(tmp_path / "f", "mine", max_side=512)[0]
    assert native_mask(case) is case.mask
    assert ev.score_case(case.mask, case)["dice"] == 1.0


def test_negative_test_images_count(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_CACHE", str(tmp_path / "cache"))
    _write_pair(tmp_path / "f", "a")
    _write_pair(tmp_path / "f", "b", fg=False)
    cases = load_folder(tmp_path / "f", "mine", max_side=256)
    data = DomainData("mine", "folder", train=[], test=cases)
    units = ev.test_units(data)
    assert [c.case_id for c in units] == ["a", "b"], "the image without a target stays a test unit"
    assert ev.negatives(units) == 1
    neg = units[1]
    assert ev.score_case(np.zeros_like(neg.mask), neg)["dice"] == 1.0
    fp = np.zeros_like(neg.mask)
    fp[:10, :10] = True
    row = ev.score_case(fp, neg)
    assert row["dice"] == 0.0 and row["negative"] and np.isnan(row["hd95"]), "a false positive counts in full"
    rows = ev.unit_rows(units, [np.ones_like(c.mask) for c in units])
    assert [r["unit"] for r in rows] == ["case", "case"] and rows[1]["dice"] == 0.0


def test_scored_units_rule():
    df = pd.DataFrame({"unit": ["case", "slice", "volume", "case", "pool", "case"],
                       "dice": [0.5, 0.9, 0.7, np.nan, 1.0, 0.2], "status": ["ok"] * 5 + ["failed"]})
    assert ev.scored_units(df).index.tolist() == [0, 2]


def test_seed_summary_uses_one_ddof():
    df = pd.DataFrame({"g": "a", "seed": [0, 0, 1, 1, 2, 2], "dice": [0.5, 0.7, 0.8, 0.8, 0.2, 0.4]})
    s = ev.seed_summary(df, ["g"]).iloc[0]
    per_seed = [0.6, 0.8, 0.3]
    assert s["mean"] == pytest.approx(np.mean(per_seed)) and s["sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert s["seeds"] == 3 and s["units"] == 2
    assert ev.mean_sd([0.6, 0.8, 0.3])[1] == pytest.approx(np.std(per_seed, ddof=1))
    assert np.isnan(ev.mean_sd([0.5])[1]) and ev.fmt_mean_sd(0.5, np.nan) == "0.500"
    assert "n − 1" in ev.ACROSS_SEEDS


def test_interval_never_zero_width():
    assert ev.fmt_interval(ev.mean_interval([0.204])) == "0.204 (n = 1, no interval)"
    assert ev.fmt_interval(ev.mean_interval([0.1, 0.2, 0.3])) == "0.200 (n = 3, no interval)"
    assert ev.fmt_interval(ev.mean_interval([0.98] * 20)) == "0.980 (n = 20, all equal)"
    iv = ev.mean_interval(np.linspace(0.5, 0.9, 20))
    text = ev.fmt_interval(iv)
    lo, hi = (float(v) for v in text.split("[")[1].rstrip("]").split(", "))
    assert lo < iv["mean"] < hi and hi - lo > 0.01


def test_bootstrap_clusters_repeated_images():
    """Ten seeds repeating the same five images must not give a ten-times narrower interval."""
    vals = np.array([0.1, 0.4, 0.5, 0.6, 0.9])
    one = ev.mean_interval(vals, clusters=np.arange(5))
    rep = ev.mean_interval(np.tile(vals, 10), clusters=np.tile(np.arange(5), 10))
    naive = ev.mean_interval(np.tile(vals, 10))                     # rows treated as independent
    width = lambda iv: iv["hi"] - iv["lo"]  # noqa: E731
    assert rep["n"] == 5 and width(rep) == pytest.approx(width(one), rel=0.05)
    assert width(naive) < 0.5 * width(rep)


def test_spearman_interval_clusters_and_flags():
    rng = np.random.default_rng(0)
    u = rng.random(30)
    d = 1 - u + 0.1 * rng.random(30)
    out = ev.spearman_interval(u, d, clusters=np.repeat(np.arange(10), 3), n_boot=200)
    assert out["rho"] < -0.8 and out["clusters"] == 10 and out["lo"] <= out["rho"] <= out["hi"]
    assert ev.spearman_interval([1, 2], [0.1, 0.2])["flag"] == "too_few_cases"
    assert ev.spearman_interval([1, 1, 1], [0.1, 0.2, 0.3])["flag"] == "constant_input"


def test_hd95_summary_counts_missing_boundaries():
    assert ev.hd95_summary([4.0, 4.2, np.nan, np.nan, 3.0], "px") == "median 4.0 px (2 of 5 without a boundary)"
    assert ev.hd95_summary([2.0, 4.0], "mm") == "median 3.0 mm"


def test_select_best_refuses_test_scores():
    t = pd.DataFrame({"domain": "a", "arch": ["u", "s"], "dice": [0.9, 0.5], "val_dice": [0.6, 0.7]})
    assert ev.select_best(t, ["domain"], "val_dice").arch.tolist() == ["s"]
    with pytest.raises(ConfigError, match="test scores"):
        ev.select_best(t, ["domain"], "dice")


def test_no_copy_of_the_evaluation_rules_outside_the_core():
    """The rules live once: no other module computes an sd across seeds or folds, bootstraps, decides which rows
    count, assembles a volume for scoring or cuts its own test split."""
    import re

    from frozenseg import paths

    lib = paths.REPO / "lib" / "frozenseg"
    patterns = {"an sd with its own ddof": r"ddof\s*=", "a bootstrap": r"\bboots\b|spearmanr",
                "which rows count": r"unit\.isin\(\[\s*[\"']case[\"'],\s*[\"']volume[\"']",
                "its own test split": r"\btest_subset\b", "a copy of a summary": r"def (scored_units|seed_summary|"
                r"fmt_mean_sd|mean_sd|cluster_bootstrap|rank_correlation|fmt_ci)\b",
                "its own volume assembly": r"(?<!ev\.)(?<!\.)\bassemble_volume\("}
    found = []
    for path in sorted(lib.rglob("*.py")):
        rel = path.relative_to(lib).as_posix()
        if rel.startswith("evaluation/"):
            continue
        text = path.read_text(encoding="utf-8")
        found += [f"{rel}: {what}" for what, pat in patterns.items() if re.search(pat, text)]
    assert not found, "evaluation rules copied outside frozenseg.evaluation:\n" + "\n".join(found)
