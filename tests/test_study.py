"""Study setup, load_domain on phantoms / real layouts / user folders, and the oracle experiment on them."""
import numpy as np
import pytest
from PIL import Image

from frozenseg.config import get_profile
from frozenseg.data import load_domain
from frozenseg.errors import ConfigError, MissingDatasetError
from frozenseg.oracle import run_oracle, summarize_oracle
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


def test_empty_ground_truth_is_flagged_not_scored(litemedsam):
    """A case with an empty mask has no GT box: it is recorded with a flag and left out of the tables."""
    from frozenseg.data import Case
    from frozenseg.oracle import oracle_cases, scored_units

    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    full = np.zeros((64, 64), bool)
    full[20:40, 20:40] = True
    cases = [Case("a", "mine", img, full, source="folder"), Case("b", "mine", img, np.zeros_like(full), source="folder")]
    embs = [litemedsam.encode(img)] * 2
    df = oracle_cases(litemedsam, cases, embs, seed=0, domain="mine", jitter_levels=(0.1,), loosen_levels=(1.5,))
    flagged = df[df.case_id == "b"]
    assert list(flagged.flag) == ["empty_gt_mask"] and flagged.dice.isna().all()
    assert set(scored_units(df.assign(unit="case")).case_id) == {"a"}
