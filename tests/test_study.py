"""Study setup, load_domain on phantoms / real layouts / user folders, and the oracle experiment on them."""
import numpy as np
import pytest
from PIL import Image

from frozenseg.config import get_profile
from frozenseg.data import load_domain
from frozenseg.errors import ConfigError, MissingDatasetError
from frozenseg.experiments.oracle import run_oracle, summarize_oracle
from frozenseg.study import setup
from test_loaders import make_kvasir, make_spleen


def test_setup_validates_parameters(capsys):
    study = setup(profile="smoke", seeds="0 1")
    assert study.seeds == [0, 1] and study.domains == ["isic", "spleen", "kvasir", "cxr"]
    assert "profile smoke" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="unknown profile 'gpu'.*cpu"):
        setup(profile="gpu")
    with pytest.raises(ConfigError, match="unknown domain 'retina'.*load_folder"):
        setup(profile="smoke", domains=["retina"])
    with pytest.raises(ConfigError, match="unknown data source"):
        setup(profile="smoke", source="imagenet")
    with pytest.raises(ConfigError, match="unknown profile field"):
        get_profile("cpu", n_tset=3)


def test_missing_real_dataset_names_it_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    with pytest.raises(MissingDatasetError, match="(?s)kvasir.*FROZENSEG_DATA"):
        load_domain("kvasir", get_profile("smoke"), source="real")


def test_real_layouts_load_and_split(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    names = [f"cju{i:022d}" for i in range(6)]
    make_kvasir(tmp_path / "kvasir", names=names)
    make_spleen(tmp_path / "msd", ids=(1, 2, 3))
    prof = get_profile("smoke", n_test=2, spleen_test_volumes=1, spleen_train_volumes=2)
    kv = load_domain("kvasir", prof, source="real")
    assert kv.source == "real" and len(kv.test) == 2 and len(kv.train) == 4
    assert not {c.case_id for c in kv.test} & {c.case_id for c in kv.train}
    sp = load_domain("spleen", prof, source="real")
    assert len(sp.volumes) == 1 and all(c.volume_id in sp.volumes for c in sp.test)
    assert not {c.volume_id for c in sp.train} & set(sp.volumes)


def _write_folder(root, n=5, size=64):
    rng = np.random.default_rng(0)
    for i in range(n):
        img = (rng.random((size, size, 3)) * 50 + 150).astype(np.uint8)
        m = np.zeros((size, size), bool)
        m[16 + i:40 + i, 20:44] = True
        img[m] = 40
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"case{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"case{i}_mask.png")


@pytest.mark.slow
def test_onboard_a_folder_and_run_the_oracle(tmp_path):
    """A new domain is a folder of image + mask pairs; the oracle runs on it with no other change."""
    _write_folder(tmp_path / "mine")
    study = setup(profile="smoke", seeds=[0], domains=["mine"], folders={"mine": str(tmp_path / "mine")},
                  verbose=False)
    assert study.source_label().startswith(f"folder {tmp_path / 'mine'}") and "(mine)" in study.source_label()
    df = run_oracle(study)
    assert set(df.domain) == {"mine"} and (df.source == "folder").all()
    table = summarize_oracle(df)
    assert table.loc[0, "n"] == len(study.data("mine").test)
    gt = df[df.method == "gt_box"].dice
    assert gt.notna().all() and gt.mean() > 0.7


@pytest.mark.slow
def test_spleen_is_scored_per_volume(tmp_path):
    study = setup(profile="smoke", seeds=[0], domains=["spleen"], verbose=False)
    df = run_oracle(study)
    vol = df[df.unit == "volume"]
    assert set(vol.case_id) == set(study.data("spleen").volumes)
    assert {"slice", "volume"} == set(df.unit)
    assert (vol[vol.method == "gt_box"].hd95 >= 0).all() and vol.dice.between(0, 1).all()
    assert summarize_oracle(df).loc[0, "unit"] == "volume"


def test_a_negative_is_scored_by_the_empty_mask_rule_not_dropped(litemedsam):
    """A case with an empty mask has no GT box: every box arm predicts an empty mask there, which scores Dice 1
    (the empty-mask rule) and counts; the row says it is a negative."""
    from frozenseg import evaluation as ev
    from frozenseg.data import Case
    from frozenseg.experiments.oracle import oracle_cases

    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    full = np.zeros((64, 64), bool)
    full[20:40, 20:40] = True
    cases = [Case("a", "mine", img, full, source="folder"), Case("b", "mine", img, np.zeros_like(full), source="folder")]
    embs = [litemedsam.encode(img)] * 2
    df = oracle_cases(litemedsam, cases, embs, seed=0, domain="mine", jitter_levels=(0.1,), loosen_levels=(1.5,))
    neg = df[df.case_id == "b"]
    assert set(neg.method) == set(df[df.case_id == "a"].method) == {"gt_box", "jitter_0.1", "loosen_1.5"}
    assert (neg.dice == 1.0).all() and neg.negative.all() and not df[df.case_id == "a"].negative.any()
    assert set(ev.scored_units(df).case_id) == {"a", "b"}


def _negative_domain(study, name="mine"):
    """A folder-like domain of 96-px images (a dark square on noise), whose test split holds a negative."""
    from frozenseg.data import Case, DomainData

    def case(i, fg=True):
        rng = np.random.default_rng(i)
        img = (rng.random((96, 96, 3)) * 60 + 150).astype(np.uint8)
        m = np.zeros((96, 96), bool)
        if fg:
            m[30 + i % 5:60 + i % 5, 28:58] = True
        img[m] = 40
        return Case(f"{name}{i}", name, img, m, source="folder")

    data = DomainData(name, "folder", train=[case(i) for i in range(6)], test=[case(10), case(11, fg=False)])
    study._data[name] = data
    return data


@pytest.mark.slow
def test_a_folder_domains_negative_test_image_is_scored_by_oracle_and_pipeline(tmp_path):
    """The oracle and the pipeline score a test image without a target (it is not dropped): the GT-box oracle
    predicts nothing there (Dice 1), a pipeline that predicts something there scores Dice 0."""
    from frozenseg.pipeline import get_route
    from frozenseg.experiments.domain import run_domain

    _write_folder(tmp_path / "mine")
    study = setup(profile="smoke", seeds=[0], domains=["mine"], folders={"mine": str(tmp_path / "mine")},
                  verbose=False)
    _negative_domain(study)
    orc = run_oracle(study)
    neg = orc[orc.case_id == "mine11"]
    assert len(neg) and neg.negative.all() and (neg[neg.method == "gt_box"].dice == 1.0).all()
    assert summarize_oracle(orc).loc[0, "negatives"] == 1
    df, info = run_domain(study, "mine", 0, "04_kvasir", route=get_route("cxr"), n_labels=5)
    rows = df[df.case_id == "mine11"].set_index("stage")
    assert rows.negative.all() and rows.loc["oracle", "dice"] == 1.0
    assert info["masks"]["mine11"].any(), "the static lung box always proposes a mask"
    assert rows.loc["deployed", "dice"] == 0.0, "a prediction on an image without a target counts as Dice 0"
    assert {"route", "hd95_unit"} <= set(df.columns) and (df[df.stage == "deployed"].route == "cxr").all()


def test_oracle_summary_uses_the_evaluation_core():
    """GT-box Dice across seeds with sd (n - 1); median HD95 says how many units had no boundary."""
    import pandas as pd

    rows = [{"domain": "d", "seed": s, "case_id": f"c{i}", "unit": "case", "method": "gt_box", "perturbation": "none",
             "level": 0.0, "dice": 0.5 + 0.2 * s, "hd95": np.nan if i == 0 else 4.0, "hd95_unit": "px",
             "negative": False} for s in (0, 1) for i in range(3)]
    t = summarize_oracle(pd.DataFrame(rows)).iloc[0]
    assert t["GT-box Dice"] == f"0.600 ± {np.std([0.5, 0.7], ddof=1):.3f}" and t["n"] == 3 and t["negatives"] == 0
    assert t["median HD95"] == "median 4.0 px (2 of 6 without a boundary)"
