"""Trained baselines on tiny configs: both archs, resume after a kill, NaN -> failed, N > pool, the nnU-Net adapter's
files, and the headline logic on synthetic results."""
import json
import math
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from frozenseg import evaluation as ev
from frozenseg.baselines import nets, nnunet, train
from frozenseg.config import PROFILES, get_profile
from frozenseg.data.types import Case, DomainData
from frozenseg.errors import ConfigError
from frozenseg.experiments import baselines, baselines_report, pretraining

TINY = {"archs": ("unet_r34", "segformer_b2"), "budgets": (3, 4), "image_side": 32, "batch_size": 2, "steps": 2,
        "eval_every": 1, "patience": 1, "min_delta": 0.0, "lr": 1e-3, "weight_decay": 1e-4, "val_fraction": 0.25,
        "bg_ratio": 0.5,
        "pretrained": False, "keep_checkpoints": True, "n_test": None, "nnunet": False,
        "nnunet_trainer": "nnUNetTrainer_1epoch", "nnunet_configuration": "2d", "nnunet_fold": "0"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny workloads: one torch thread, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _disc_case(i: int, side: int = 40, grey: bool = False) -> Case:
    """A dark disc on noisy bright background, position varying with ``i``."""
    rng = np.random.default_rng(i)
    img = (rng.random((side, side, 3)) * 40 + 150).astype(np.uint8)
    yy, xx = np.mgrid[:side, :side]
    mask = (yy - 14 - i % 5) ** 2 + (xx - 16 - i % 7) ** 2 < 64
    img[mask] = 50
    if grey:
        img[..., 1] = img[..., 2] = img[..., 0]
    return Case(case_id=f"toy_p{i:05d}", domain="toy", image=img, mask=mask, source="folder")


@dataclass
class ToyStudy:
    """The slice of a Study the sweep uses, over in-memory toy domains."""

    domains: list
    seeds: list
    profile: object = field(default_factory=lambda: get_profile("smoke"))
    _data: dict = field(default_factory=dict)

    def data(self, domain):
        if domain not in self._data:
            cases = [_disc_case(i, grey=domain == "grey") for i in range(9)]
            self._data[domain] = DomainData(domain=domain, source="folder", train=cases[:6], test=cases[6:])
        return self._data[domain]

    def source_of(self, domain):
        return "folder"


# ----------------------------------------------------------------------------- networks and training


@pytest.mark.parametrize("arch", list(nets.ARCHS))
def test_both_archs_build_offline_from_scratch_and_predict_full_size(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))           # no encoder weights on disk
    net, init = nets.build_net(arch, "auto", seed=0)
    assert init == nets.FROM_SCRATCH
    again, _ = nets.build_net(arch, "auto", seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    masks = train.predict_masks(net, [_disc_case(0).image, np.zeros((24, 40, 3), np.uint8)], side=32)
    assert masks[0].shape == (40, 40) and masks[1].shape == (24, 40) and masks[0].dtype == bool


def test_encoder_weights_on_disk_are_used_and_labelled_pretrained(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    ref, _ = nets.build_net("unet_r34", False, seed=5)
    folder = tmp_path / "weights" / "smp-resnet34-imagenet"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    save_file({k: v.contiguous() for k, v in ref.encoder.state_dict().items()}, str(folder / "model.safetensors"))
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    nets._template.cache_clear()
    net, init = nets.build_net("unet_r34", "auto", seed=0)
    nets._template.cache_clear()
    assert init == nets.PRETRAINED
    assert all(torch.equal(a, b) for a, b in zip(net.encoder.state_dict().values(), ref.encoder.state_dict().values()))


def test_pretrained_true_without_weights_names_them(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    with pytest.raises(Exception, match="smp_resnet34_imagenet"):
        nets.resolve_init("unet_r34", True)


@pytest.mark.parametrize("arch", list(nets.ARCHS))
def test_tiny_training_runs_keeps_best_step_and_curve(arch):
    x, y = train.prepare([_disc_case(i) for i in range(5)], 32)
    net, _ = nets.build_net(arch, False, seed=1)
    run = train.train_net(net, x, y, steps=3, batch_size=2, lr=1e-3, eval_every=1, patience=5, val_fraction=0.4, seed=0)
    assert run.ok and run.steps_run == 3 and 1 <= run.best_step <= 3
    assert [h["step"] for h in run.history] == [1, 2, 3] and len(run.val_index) == 2
    assert all(math.isfinite(h["val_loss"]) for h in run.history)


@pytest.mark.parametrize("monitor", ["val_loss", "val_dice"])
def test_the_first_evaluation_is_an_improvement_not_a_strike(monitor):
    """With no best yet, min_delta must not turn the first evaluation into 'no improvement' (inf * 0 is NaN), which
    stopped every patience-1 run after one evaluation."""
    x, y = train.prepare([_disc_case(i) for i in range(5)], 32)
    net, _ = nets.build_net("unet_regnetx002", False, seed=1)
    run = train.train_net(net, x, y, steps=3, batch_size=2, lr=1e-3, eval_every=1, patience=1, min_delta=0.0,
                          monitor=monitor, val_fraction=0.4, seed=0)
    assert run.best_step >= 1 and run.steps_run >= 2, "a patience-1 run stopped at its first evaluation"


def test_image_side_must_suit_the_encoders():
    with pytest.raises(ConfigError, match="multiple of 32"):
        train.to_tensors([_disc_case(0).image], 40)


# ----------------------------------------------------------------------------- the sweep


def test_sweep_resumes_after_a_kill_without_retraining(tmp_path, monkeypatch):
    study, params = ToyStudy(["toy"], [0]), {**TINY, "archs": ("unet_r34",)}
    calls = []
    real = baselines.train_net
    monkeypatch.setattr(baselines, "train_net", lambda *a, **k: calls.append(1) or real(*a, **k))
    killed = {"n": 0}
    real_save = baselines.save_run

    def save_then_die(folder, *a, **k):
        real_save(folder, *a, **k)
        killed["n"] += 1
        if killed["n"] == 1:
            raise KeyboardInterrupt("simulated kill after the first finished run")

    monkeypatch.setattr(baselines, "save_run", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        baselines.run_sweep(study, params, root=tmp_path, progress=False)
    assert len(calls) == 1
    first = tmp_path / "toy" / "unet_r34_n003_s0"
    assert {p.name for p in first.iterdir()} >= {"run.json", "rows.parquet", "curve.csv", "best.pt"}
    (tmp_path / "toy" / "unet_r34_n004_s0").mkdir(parents=True)
    (tmp_path / "toy" / "unet_r34_n004_s0" / "rows.parquet").write_bytes(b"partial")   # no run.json: not finished
    df = baselines.run_sweep(study, params, root=tmp_path, progress=False)
    assert len(calls) == 2                                     # only the unfinished run trained again
    assert sorted(df.n_labels.unique()) == [3, 4] and (df.status == "ok").all()
    baselines.run_sweep(study, params, root=tmp_path, progress=False)
    assert len(calls) == 2                                     # everything finished: nothing retrained
    changed = baselines.run_sweep(study, {**params, "steps": 1}, root=tmp_path, progress=False)
    assert len(calls) == 4 and (changed.steps_run == 1).all()  # a changed setting retrains (stale signature)


def test_the_run_signature_hashes_the_training_module_the_networks_train_with():
    """A run retrains when frozenseg.training (its loss, hard Dice, validation split) or the run helpers change."""
    import ast
    from pathlib import Path

    root = Path(baselines.__file__).parents[1]
    tree = ast.parse((root / "baselines" / "train.py").read_text(encoding="utf-8"))
    used = {f"{n.module.replace('.', '/')}.py" for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.level == 2 and n.module not in (None, "errors")}
    assert "training.py" in used and used | {"experiments/baselines.py"} <= set(baselines.CODE_FILES)
    assert all((root / name).is_file() for name in baselines.CODE_FILES)
    scoring = {"evaluation/metrics.py", "evaluation/units.py", "data/native.py"}
    assert scoring <= set(baselines.CODE_FILES), \
        "a change in how test predictions are scored must rescore finished runs"


def test_nan_loss_is_recorded_as_a_failed_run_and_never_averaged(tmp_path, monkeypatch):
    study, params = ToyStudy(["toy"], [0, 1]), {**TINY, "archs": ("unet_r34",), "budgets": (3,)}
    real_loss = train.loss_fn
    monkeypatch.setattr(train, "loss_fn", lambda lo, t: real_loss(lo, t) * float("nan"))
    bad = baselines.run_one(study, baselines.RunKey("toy", "unet_r34", 3, 0), params, tmp_path)[0]
    monkeypatch.setattr(train, "loss_fn", real_loss)
    good = baselines.run_one(study, baselines.RunKey("toy", "unet_r34", 3, 1), params, tmp_path)[0]
    assert (bad.status == "failed").all() and bad.dice.isna().all() and (bad.flag == "training_failed").all()
    assert "non-finite" in bad.message.iloc[0]
    assert not (tmp_path / "toy" / "unet_r34_n003_s0" / "best.pt").exists()
    df = pd.concat([bad, good])
    curves = baselines_report.nn_curves(df)
    assert curves.seeds.tolist() == [1] and curves["mean"].iloc[0] == pytest.approx(good.dice.mean())
    assert baselines.failed_runs(df)[["seed", "n_labels"]].values.tolist() == [[0, 3]]


def test_budget_larger_than_the_pool_is_left_out_and_said(tmp_path, capsys):
    study = ToyStudy(["toy"], [0])
    df = baselines.run_sweep(study, {**TINY, "archs": ("unet_r34",), "budgets": (3, 7)}, root=tmp_path, progress=False)
    assert set(df.n_labels) == {3}, "N=7 does not fit a pool of 6: no run made of repeated labels"
    assert "toy: N=7 left out (train pool 6)" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="train pool holds 6"):
        baselines.check_budget("toy", 7, 6)


def test_spleen_trains_on_background_slices_and_scores_whole_volumes(tmp_path):
    from frozenseg.study import setup

    study = setup(profile="smoke", seeds=[0], domains=["spleen"], verbose=False)
    params = {**TINY, "archs": ("segformer_b2",), "budgets": (3,), "steps": 1}
    cases, n_bg = baselines.labelled_cases(study, "spleen", 3, 0, 1.0)
    assert n_bg == 3 and sum(not c.mask.any() for c in cases) == 3
    assert {c.volume_id for c in cases} <= set(study.data("spleen").meta["train_volumes"])
    df, _ = baselines.run_one(study, baselines.RunKey("spleen", "segformer_b2", 3, 0), params, tmp_path)
    assert (df.unit == "volume").all() and set(df.case_id) == set(study.data("spleen").volumes)


def test_profiles_size_the_baselines():
    for name, prof in PROFILES.items():
        p = baselines.baseline_params(prof)
        assert set(p["archs"]) <= set(nets.ARCHS) and len(p["archs"]) == 2 and p["image_side"] % 32 == 0
    cpu, full = baselines.baseline_params(get_profile("cpu")), baselines.baseline_params(get_profile("full"))
    assert cpu["budgets"] == (10, 25, 50, 100) and cpu["steps"] < full["steps"]
    assert full["archs"] == nets.STUDY_ARCHS, "the full profile trains the study's networks"
    assert cpu["image_side"] >= 128, "converged baselines at 128 px or more (issue 15)"
    assert "smaller than the study's" in baselines.size_caption(cpu) and "smaller" not in baselines.size_caption(full)


# ----------------------------------------------------------------------------- nnU-Net adapter


def test_nnunet_adapter_writes_the_raw_layout_and_reads_predictions_back(tmp_path):
    study = ToyStudy(["toy", "grey"], [0])
    rgb = baselines.write_dataset(study, "toy", 3, 0, (3, 4), tmp_path / "raw")
    assert rgb.name == "Dataset900_frozenseg_toy_n3_s0"
    meta = json.loads((rgb / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"} and meta["file_ending"] == ".nii.gz"
    assert meta["labels"] == {"background": 0, "target": 1} and meta["numTraining"] == 3
    train_ids = json.loads((rgb / "cases.json").read_text())["train"]
    assert sorted(p.name for p in (rgb / "labelsTr").iterdir()) == sorted(f"{c}.nii.gz" for c in train_ids)
    assert {p.name for p in (rgb / "imagesTr").iterdir()} == {f"{c}_{k:04d}.nii.gz" for c in train_ids for k in range(3)}
    lab = np.asarray(nib.load(str(rgb / "labelsTr" / f"{train_ids[0]}.nii.gz")).dataobj)
    assert lab.shape == (40, 40, 1) and lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 1}
    grey = baselines.write_dataset(study, "grey", 4, 0, (3, 4), tmp_path / "raw")
    assert json.loads((grey / "dataset.json").read_text())["channel_names"] == {"0": "grey"}
    assert {p.name.rsplit("_", 1)[1] for p in (grey / "imagesTs").iterdir()} == {"0000.nii.gz"}
    pred = tmp_path / "pred"
    for c in study.data("toy").test:
        nnunet.write_label(pred, c.case_id, c.mask, (1.0, 1.0))
    rows = baselines.import_predictions(study, rgb, pred, seed=0, n=3)
    assert (rows.dice == 1.0).all() and (rows.arch == "nnunet").all() and len(rows) == 3
    assert rows.val_dice.isna().all() and "negative" in rows, "no fold validation given: it cannot be chosen"
    cmds = nnunet.commands(rgb, trainer="nnUNetTrainer_1epoch")
    assert cmds[0][:3] == ["nnUNetv2_plan_and_preprocess", "-d", "900"] and "--npz" in cmds[1]
    assert cmds[2][0] == "nnUNetv2_predict" and str(rgb / "imagesTs") in cmds[2]


def test_nnunet_spleen_volumes_keep_only_labelled_slices(tmp_path):
    from frozenseg.study import setup

    study = setup(profile="smoke", seeds=[0], domains=["spleen"], verbose=False)
    folder = baselines.write_dataset(study, "spleen", 3, 0, (3,), tmp_path / "raw")
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"]["ignore"] == max(meta["labels"].values()) == nnunet.IGNORE
    lab = np.asarray(nib.load(str(next((folder / "labelsTr").iterdir()))).dataobj)
    assert lab.ndim == 3 and set(np.unique(lab)) <= {0, 1, 2} and (lab == 2).any()
    labelled = [z for z in range(lab.shape[2]) if (lab[:, :, z] != 2).all()]
    assert 1 <= len(labelled) <= 3 and all(lab[:, :, z].any() for z in labelled)


def test_dataset_ids_are_unique_per_domain_budget_and_seed():
    ids = {nnunet.dataset_id(d, n, s, (10, 25, 50, 100)) for d in ("isic", "spleen", "kvasir", "cxr")
           for n in (10, 25, 50, 100) for s in range(3)}
    assert len(ids) == 48 and all(100 <= i <= 999 for i in ids)
    with pytest.raises(ConfigError):
        nnunet.dataset_id("isic", 10, 25, (10,))


# ----------------------------------------------------------------------------- headline logic


def _synthetic(pipeline_dice: float = 0.85):
    """Two archs x N x two seeds on one domain (SegFormer better on validation and test), the pipeline at every N (a
    flat curve at ``pipeline_dice`` using at most 12 labels) and a tuned decoder at N = 25."""
    rows = []
    for arch, base in (("unet_r34", 0.70), ("segformer_b2", 0.75)):
        for n, lift in ((10, 0.0), (25, 0.05), (50, 0.10), (100, 0.15)):
            for seed, jit in ((0, -0.01), (1, 0.01)):
                for case in range(3):
                    rows.append({"domain": "isic", "arch": arch, "init": "from scratch", "n_labels": n, "seed": seed,
                                 "unit": "case", "flag": "", "status": "ok", "case_id": f"c{case}",
                                 "dice": base + lift + jit, "val_dice": base + lift, "labels_used": n})
    nn = pd.DataFrame(rows)
    pipe = pd.DataFrame([{"domain": "isic", "n_labels": n, "seed": s, "dice": pipeline_dice + d,
                          "labels_used": min(n, 12)} for n in (10, 25, 50, 100) for s, d in ((0, -0.01), (1, 0.01))])
    dec = pd.DataFrame({"domain": ["isic"] * 4, "arm": ["gt_box", "gt_box", "localizer", "localizer"],
                        "n_labels": [25] * 4, "seed": [0, 1, 0, 1], "dice": [0.9, 0.92, 0.8, 0.82],
                        "labels_used": [25] * 4})
    return nn, pipe, dec


def test_match_n_interpolates_in_log_n():
    assert baselines_report.match_n([10, 100], [0.5, 0.9], 0.7) == pytest.approx(math.sqrt(1000))
    assert baselines_report.match_n([10, 25], [0.8, 0.9], 0.7) == -math.inf
    assert baselines_report.match_n([10, 25], [0.5, 0.6], 0.7) == math.inf
    assert baselines_report.fmt_match([math.inf, math.inf], [10, 100]) == "> 100"
    assert baselines_report.fmt_match([30.0, math.inf], [10, 100]).startswith("30 (1/2 seeds")
    # the crossing of two curves: the network's minus the pipeline's goes from -0.1 at N=10 to +0.1 at N=100
    assert baselines_report.crossing_n([10, 100], [-0.1, 0.1]) == pytest.approx(math.sqrt(1000))


def test_headline_compares_each_budget_with_the_labels_each_method_used():
    nn, pipe, dec = _synthetic()
    pipe = pipe.assign(dice=[0.86, 0.89] * 4)               # mean 0.875 at every N: leads up to N=50, not at 100
    table, leads = baselines_report.headline(nn, pipe, {"isic": "02_isic"}, dec)
    assert table.N.tolist() == [10, 25, 50, 100]
    r10, r100 = table.iloc[0], table.iloc[3]
    assert r10["best NN"].startswith("0.750 ± 0.014 (SegFormer") and r10["NN labels used"] == 10
    assert r10["training-free pipeline"] == "0.875 ± 0.021" and r10["pipeline labels used"] == 10
    assert r100["pipeline labels used"] == 12 and r100["NN labels used"] == 100
    assert r100["pipeline − best NN"] == "-0.025"
    assert leads["best NN"].tolist() == [True, True, True, False]
    r25 = table.iloc[1]
    assert r25["tuned decoder, GT box"] == "0.910 ± 0.014 (25 labels)"
    assert r25["tuned decoder + domain localizer"] == "0.810 ± 0.014 (25 labels)" and r10["tuned decoder, GT box"] == "–"
    match = baselines_report.match_table(nn, pipe, {"isic": "02_isic"})
    assert match["pipeline leads the best NN at N"].iloc[0] == "10, 25, 50"
    # per seed, the network's curve meets the pipeline's between 50 and 100 (linear in log N on the difference):
    # seed 0: 0.84 - 0.86 = -0.02 -> 0.89 - 0.86 = +0.03 at 0.4; seed 1: 0.86 - 0.89 -> 0.91 - 0.89 at 0.6
    n0, n1 = (50 * 2 ** 0.4, 50 * 2 ** 0.6)
    assert match["N for best NN to match pipeline"].iloc[0] == f"{(n0 + n1) / 2:.0f} ± {np.std([n0, n1], ddof=1):.0f}"
    marked = baselines_report.mark_leads(table, leads)
    assert marked["best NN"].iloc[0].endswith("★") and not marked["best NN"].iloc[3].endswith("★")
    assert "font-weight: bold" in baselines_report.bold_leads(table, leads).to_html()


def test_the_pipeline_is_drawn_as_its_own_curve_with_its_labels():
    nn, pipe, _ = _synthetic()
    pipe.loc[pipe.n_labels == 10, "dice"] -= 0.2             # the pipeline improves from N=10 to N=25
    fig = baselines_report.panels(nn, pipe)
    line = next(l for l in fig.axes[0].lines if l.get_label() == "training-free pipeline")
    assert list(line.get_xdata()) == [10, 25, 50, 100] and line.get_ydata()[0] < line.get_ydata()[1]
    assert [t.get_text() for t in fig.axes[0].texts] == ["10", "12", "12", "12"]


def test_headline_without_pipeline_results_says_pending_and_invents_nothing():
    nn, _, _ = _synthetic()
    empty = pd.DataFrame(columns=["domain", "n_labels", "seed", "dice", "labels_used"])
    table, leads = baselines_report.headline(nn, empty, {"isic": "pending"}, empty.assign(arm=[]))
    row = table.iloc[0]
    assert row["training-free pipeline"] == "pending" and row["pipeline labels used"] == "pending"
    assert row["tuned decoder, GT box"] == "pending"
    assert not leads.to_numpy().any()
    match = baselines_report.match_table(nn, empty, {"isic": "pending"})
    assert match["N for best NN to match pipeline"].iloc[0] == "pending"
    fig = baselines_report.panels(nn, empty)
    assert fig.axes[0].texts[0].get_text() == "pipeline: pending"


def test_pipeline_scores_read_the_deployed_stage_per_budget(tmp_path, monkeypatch):
    from frozenseg.results import save_results

    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    rows = [{"notebook": "02_isic", "profile": "smoke", "source": "phantom", "model": "litemedsam", "seed": s,
             "domain": "isic", "unit": "case", "case_id": f"c{c}", "method": f"{st}_n{n}", "stage": st,
             "n_labels": n, "labels_used": min(n, 7), "dice": d + 0.01 * n, "flag": ""}
            for s in (0, 1) for n in (5, 10) for c in range(2)
            for st, d in (("localize", 0.5), ("deployed", 0.7 + 0.1 * s))]
    save_results(pd.DataFrame(rows), "02_isic", "smoke")
    per_seed, origin = baselines_report.pipeline_per_seed("smoke", ["isic", "cxr"])
    assert origin == {"isic": "02_isic", "cxr": "pending"}
    assert per_seed.dice.round(3).tolist() == [0.75, 0.85, 0.8, 0.9]
    assert per_seed.labels_used.tolist() == [5, 5, 7, 7]


def test_runner_runs_what_a_notebook_reads_before_it():
    from frozenseg.runner import run_order

    order = run_order(["00_data", "05_cxr", "06_trained_baselines", "07_fewshot_decoder", "08_medical_pretraining"])
    assert order.index("07_fewshot_decoder") < order.index("06_trained_baselines")
    assert order.index("05_cxr") < order.index("06_trained_baselines") and order[0] == "00_data"
    assert order.index("07_fewshot_decoder") < order.index("08_medical_pretraining")


# ----------------------------------------------------------------------------- notebook 08


def test_pretraining_reuses_notebook_07_only_when_it_covers_the_study(tmp_path, monkeypatch):
    from frozenseg.results import save_results

    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    study, params = ToyStudy(["isic"], [0, 1]), {"budgets": (1, 2)}
    rows = [{"notebook": "07_fewshot_decoder", "profile": "smoke", "source": "phantom", "model": "litemedsam",
             "seed": s, "domain": "isic", "unit": "case", "case_id": "c0", "arm": arm, "decoder": dec, "n_labels": n,
             "method": f"{dec}_{arm}_n{n}", "dice": 0.9, "flag": ""}
            for s in (0, 1) for arm in ("gt_box", "deployable") for dec, n in (("frozen", 0), ("tuned", 1), ("tuned", 2))]
    save_results(pd.DataFrame(rows), "07_fewshot_decoder", "smoke")
    reused = pretraining.reusable_07(study, params, "litemedsam")
    assert reused is not None and set(reused.arm) == {"gt_box"} and set(reused.reused_from) == {"07_fewshot_decoder"}
    assert pretraining.reusable_07(ToyStudy(["isic"], [0, 2]), params, "litemedsam") is None      # seed 2 missing
    assert pretraining.reusable_07(study, {"budgets": (1, 5)}, "litemedsam") is None             # N=5 missing
    assert pretraining.reusable_07(study, params, "medsam") is None


def test_pretraining_tunes_on_the_gt_boxes_of_its_labels_as_notebook_07_does(monkeypatch):
    """Where notebook 07's rows do not cover a model, 08 runs 07's GT-box arm itself: each labelled image's own box."""
    from frozenseg.experiments import fewshot

    class Stop(Exception):
        pass

    seen = []

    def spy(model, labelled, embeddings, boxes, params, seed):
        seen.append((list(boxes), [fewshot.gt_box_provider(labelled)(c) for c in labelled]))
        raise Stop

    monkeypatch.setattr(pretraining, "tune_arm", spy)
    study = ToyStudy(["toy"], [0])
    study.model, study.embeddings = None, lambda cases, desc="": [None] * len(cases)
    with pytest.raises(Stop):
        pretraining.gt_box_rows(study, "toy", 0, {"n_test": None, "budgets": (3,)})
    (boxes, gt), = seen
    assert len(boxes) == 3 and all(np.array_equal(b, g) for b, g in zip(boxes, gt))


def test_notebook_08_runs_a_second_model_that_notebook_07_does_not_cover(ellipse_folder, tmp_path, monkeypatch):
    """Notebook 08's calls with LiteMedSAM and a second model (a tiny random SAM standing in for SAM ViT-B, whose
    registry loader builds the full-size network) and no notebook 07 rows to reuse: each model runs 07's GT-box arm
    itself, frozen and tuned, and both get columns."""
    from frozenseg import models
    from frozenseg.models.base import state_dict_hash
    from frozenseg.models.sam import SamCheckpoint
    from frozenseg.study import setup
    from test_models import _tiny_sam

    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path / "out"))          # no notebook 07 results to reuse
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FROZENSEG_THREADS", "1")
    sam = _tiny_sam()
    tiny = SamCheckpoint(sam, weights_id=state_dict_hash(sam), key="sam_vit_b", label=models.MODELS["sam_vit_b"][0])
    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda key="litemedsam", *a, **k: tiny if key == "sam_vit_b"
                        else real(key, *a, **k))
    study = setup(profile="smoke", seeds=[0], domains=["mine"], folders={"mine": str(ellipse_folder)}, verbose=False)
    params = {**pretraining.fewshot_params(study.profile), "budgets": (2,), "epochs": 1}
    status = pretraining.model_status()
    assert status.set_index("model").present.to_dict() == {"sam_vit_b": False, "medsam": False, "litemedsam": True}
    status["present"] = status.model.isin(["litemedsam", "sam_vit_b"])
    df = pretraining.run_pretraining(study, params, status)
    assert set(df.model) == {"litemedsam", "sam_vit_b"} and (df.reused_from == "").all()
    for key, g in df.groupby("model"):
        assert set(zip(g.decoder, g.n_labels)) == {("frozen", 0), ("tuned", 2)}, key
        assert len(g) == 2 * len(study.data("mine").test) and g.dice.notna().all() and (g.status == "ok").all()
    table = pretraining.pretraining_table(df, status)
    labels = [models.MODELS[k][0] for k in ("litemedsam", "sam_vit_b")]
    assert list(table.columns) == ["domain"] + [f"{lab}: {col}" for lab in labels for col in ("frozen", "tuned N=2")]
    pretraining.pretraining_plot(df, status)


def test_pretraining_status_lists_absent_weights_without_inventing_columns(tmp_path, monkeypatch):

    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    status = pretraining.model_status()
    assert status.set_index("model").present.to_dict() == {"sam_vit_b": False, "medsam": False, "litemedsam": True}
    note = pretraining.absent_note(status)
    assert "sam_vit_b" in note and "medsam" in note and "not shown" in note
    df = pd.DataFrame([{"domain": "isic", "model": "litemedsam", "decoder": dec, "n_labels": n, "seed": s,
                        "unit": "case", "flag": "", "case_id": "c0", "dice": d}
                       for s in (0, 1) for dec, n, d in (("frozen", 0, 0.8), ("tuned", 2, 0.9))])
    table = pretraining.pretraining_table(df, status)
    assert [c for c in table.columns if c != "domain"] == [
        "LiteMedSAM (medical, MedSAM-distilled TinyViT): frozen", "LiteMedSAM (medical, MedSAM-distilled TinyViT): tuned N=2"]


def test_flagged_units_count_and_only_units_without_a_prediction_are_left_out():
    """A flag is a diagnostic (a localizer's fallback, no trajectory fit on a real CT): the unit counts with its
    prediction in every table; a unit without one (a failed run, NaN Dice) does not. Dropping flagged units would
    drop exactly a method's hard cases."""
    df = pd.DataFrame({"domain": "spleen", "arch": "unet_r34", "init": "from scratch", "n_labels": 5, "seed": 0,
                       "unit": ["volume", "volume", "volume", "slice"],
                       "flag": ["", "no_trajectory", "training_failed", ""], "dice": [0.9, 0.2, math.nan, 0.5],
                       "status": "ok"})
    assert sorted(ev.scored_units(df).dice) == [0.2, 0.9]
    assert baselines_report.nn_curves(df)["mean"].iloc[0] == pytest.approx(0.55)
    assert not any(hasattr(baselines_report, name) for name in ("scored", "unit_rows", "mean_sd"))


# ----------------------------------------------------------------------------- issue 20: no choice on test scores


def _planted(n_budgets=(10, 25)):
    """U-Net wins on TEST Dice but loses on validation Dice (a test-only winner), except in seed 1 at N = 25 where
    its validation Dice is the higher one; the pipeline sits between the two archs' test scores."""
    rows = []
    for arch, test, val in (("unet_r34", 0.90, 0.60), ("segformer_b2", 0.80, 0.70)):
        for n in n_budgets:
            for seed in (0, 1):
                v = 0.75 if (arch, seed, n) == ("unet_r34", 1, 25) else val
                for case in range(3):
                    rows.append({"domain": "isic", "arch": arch, "init": "from scratch", "n_labels": n, "seed": seed,
                                 "unit": "case", "flag": "", "status": "ok", "case_id": f"c{case}", "dice": test,
                                 "val_dice": v, "labels_used": n})
    pipe = pd.DataFrame([{"domain": "isic", "n_labels": n, "seed": s, "dice": 0.85, "labels_used": n}
                         for n in n_budgets for s in (0, 1)])
    return pd.DataFrame(rows), pipe


def test_best_network_is_chosen_on_validation_dice_never_on_test_dice():
    nn, pipe = _planted()
    curves = baselines_report.nn_curves(nn)
    assert "val_dice" in curves and curves.set_index(["arch", "n_labels"]).val_dice[("unet_r34", 25)] == \
        pytest.approx((0.60 + 0.75) / 2)
    best = baselines_report.best_nn(curves)
    assert best.arch.tolist() == ["segformer_b2", "segformer_b2"], "the test-only winner must not be chosen"
    assert best["mean"].tolist() == pytest.approx([0.80, 0.80]), "the chosen arch's TEST Dice is reported"
    env = baselines_report.envelope_per_seed(nn).set_index(["seed", "n_labels"])
    assert env.arch.to_dict() == {(0, 10): "segformer_b2", (0, 25): "segformer_b2", (1, 10): "segformer_b2",
                                  (1, 25): "unet_r34"}, "per seed, the arch with that seed's higher validation Dice"
    assert env.dice[(0, 10)] == pytest.approx(0.80) and env.dice[(1, 25)] == pytest.approx(0.90)


def test_headline_and_match_table_lead_against_the_validation_choice():
    nn, pipe = _planted()
    table, leads = baselines_report.headline(nn, pipe, {"isic": "02_isic"}, pipe.iloc[:0].assign(arm=[]))
    assert table["best NN"].tolist() == ["0.800 ± 0.000 (SegFormer (MiT-B2), from scratch)"] * 2
    assert table["pipeline − best NN"].tolist() == ["+0.050", "+0.050"]
    assert leads["best NN"].all(), "the pipeline leads the network chosen on validation, not the test-only winner"
    match = baselines_report.match_table(nn, pipe, {"isic": "02_isic"})
    assert match["pipeline leads the best NN at N"].iloc[0] == "10, 25"
    fig = baselines_report.panels(nn, pipe)
    assert any(c.get_label() == "pipeline leads" and len(c.get_paths()) and len(c.get_paths()[0].vertices)
               for c in fig.axes[0].collections), "shaded where the pipeline leads the validation-chosen arch"


def test_a_cell_without_validation_dice_cannot_be_chosen_and_says_so():
    nn, pipe = _planted((10,))
    nn = nn.assign(arch="nnunet", val_dice=np.nan).drop_duplicates(["seed", "case_id"])
    table, leads = baselines_report.headline(nn, pipe, {"isic": "02_isic"}, pipe.iloc[:0].assign(arm=[]))
    assert table["best NN"].iloc[0] == baselines_report.NO_VAL and not leads.to_numpy().any()
    assert baselines_report.envelope_per_seed(nn).empty


def test_runs_carry_the_validation_dice_at_the_weights_they_kept(tmp_path):
    study, params = ToyStudy(["toy"], [0]), {**TINY, "archs": ("unet_r34",), "budgets": (4,), "steps": 3,
                                             "patience": 5, "monitor": "val_loss"}
    df, _ = baselines.run_one(study, baselines.RunKey("toy", "unet_r34", 4, 0), params, tmp_path)
    folder = tmp_path / "toy" / "unet_r34_n004_s0"
    curve, run = pd.read_csv(folder / "curve.csv"), json.loads((folder / "run.json").read_text())
    kept = curve[curve.step == run["best_step"]].val_dice.iloc[0]
    assert df.val_dice.nunique() == 1 and df.val_dice.iloc[0] == pytest.approx(kept)
    assert run["val_dice"] == pytest.approx(kept)
    assert "val_dice" in baselines_report.runs_table(df)


def test_nnunet_validation_dice_is_read_from_its_fold_summary(tmp_path):
    folder = tmp_path / "raw" / "Dataset900_frozenseg_toy_n3_s0"
    assert math.isnan(nnunet.fold_val_dice(tmp_path, folder))
    out = tmp_path / "results" / folder.name / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0" / "validation"
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": 0.71}}))
    assert nnunet.fold_val_dice(tmp_path, folder) == pytest.approx(0.71)


def test_training_curve_dot_sits_at_the_kept_step_not_the_loss_minimum():
    curves = pd.DataFrame({"step": [1, 2, 3], "val_loss": [0.2, 0.5, 0.6], "val_dice": [0.3, 0.5, 0.8],
                           "domain": "isic", "arch": "unet_r34", "n_labels": 10, "seed": 0})
    runs = pd.DataFrame({"domain": ["isic"], "arch": ["unet_r34"], "n_labels": [10], "seed": [0], "best_step": [3]})
    fig = baselines_report.curve_plot(curves, runs)
    dots = [line for line in fig.axes[0].lines if line.get_marker() == "o"]
    assert len(dots) == 1 and list(dots[0].get_xdata()) == [3] and list(dots[0].get_ydata()) == [0.8]


# ----------------------------------------------------------------------------- issue 20: native size, negatives


def test_test_predictions_are_scored_at_native_size_and_negatives_count(native_pair, monkeypatch):
    (big, empty), truth = native_pair
    assert big.mask.shape == (512, 410)
    # the network predicts at the loaded size: here exactly the shrunk ground truth, and nothing on the negative
    monkeypatch.setattr(baselines, "predict_masks", lambda net, images, side: [big.mask, np.zeros_like(empty.mask)])
    rows = baselines.score_rows(None, [big, empty], [], 32)
    assert rows[0]["dice"] == pytest.approx(ev.dice(ev.upsample(big.mask, (1000, 800)), truth))
    assert rows[0]["dice"] < 0.99, "scored against the 1000 px mask, not the 512 px copy"
    assert rows[1]["negative"] and rows[1]["dice"] == 1.0 and not rows[0]["negative"]


def test_negative_test_images_stay_test_units_of_a_run(tmp_path):
    study = ToyStudy(["toy"], [0])
    data = study.data("toy")
    neg = Case(case_id="toy_neg", domain="toy", image=data.test[0].image, mask=np.zeros((40, 40), bool),
               source="folder")
    data.test.append(neg)
    df, _ = baselines.run_one(study, baselines.RunKey("toy", "unet_r34", 3, 0), {**TINY, "archs": ("unet_r34",)},
                              tmp_path)
    assert "toy_neg" in set(df.case_id) and df.set_index("case_id").negative["toy_neg"]
    assert not df[df.case_id != "toy_neg"].negative.any()
    assert "toy 4 images (1 without a target)" in baselines.units_note(study, None)


# ----------------------------------------------------------------------------- issue 20: one evaluation core


def test_notebooks_06_and_08_summaries_go_through_the_evaluation_core(monkeypatch):

    calls = []
    for name in ("scored_units", "seed_summary", "select_best"):
        real = getattr(ev, name)
        monkeypatch.setattr(ev, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    nn, pipe = _planted()
    baselines_report.headline(nn, pipe, {"isic": "02_isic"}, pipe.iloc[:0].assign(arm=[]))
    assert {"scored_units", "seed_summary", "select_best"} <= set(calls)
    calls.clear()
    df = pd.DataFrame([{"domain": "isic", "model": "litemedsam", "decoder": dec, "n_labels": n, "seed": s,
                        "unit": "case", "flag": "", "status": "ok", "case_id": "c0", "dice": d}
                       for s in (0, 1) for dec, n, d in (("frozen", 0, 0.8), ("tuned", 2, 0.9))])
    pretraining.pretraining_table(df, pretraining.model_status())
    assert {"scored_units", "seed_summary"} <= set(calls)


# ----------------------------------------------------------------------------- issue 20: every sentence backed


def _markdown(name: str) -> str:
    import jupytext

    from frozenseg import paths

    nb = jupytext.read(paths.NOTEBOOKS / f"{name}.py")
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_notebook_prose_states_nothing_the_code_contradicts():
    md06, md07 = _markdown("06_trained_baselines"), _markdown("07_fewshot_decoder")
    assert "ResNet-18" not in md06, "the cpu profile trains RegNetX-200MF: the networks are printed from params"
    assert "lowest validation loss" not in md06, "the cpu profile monitors validation Dice: say what params say"
    assert "ISIC's drawer" not in md07, "the localizer arm fits the route's localizer: printed from the rows"
    cpu = baselines.baseline_params(get_profile("cpu"))
    assert "RegNetX-200MF" in baselines.size_caption(cpu) and "highest validation Dice" in baselines.size_caption(cpu)
    assert "lowest validation loss" in baselines.monitor_note(baselines.baseline_params(get_profile("full")))


def test_no_typed_timings_in_the_networks_code():
    import re

    from frozenseg import paths

    for name in ("nets.py", "train.py"):
        text = (paths.REPO / "lib" / "frozenseg" / "baselines" / name).read_text(encoding="utf-8")
        assert not re.findall(r"\d+(?:\.\d+)?\s*(?:s\b|x faster)", text), name


# ----------------------------------------------------------------------------- issue 24: the method and the experiments


NOT_METHOD = ("frozenseg.experiments", "frozenseg.report", "frozenseg.results", "frozenseg.study", "frozenseg.runner",
              "notebooks")


def foreign_imports(package: str) -> list[str]:
    """'module imports target' for every import (module- or function-level) of ``frozenseg.<package>`` that reaches
    the experiments, the report, results files, the study set-up or the notebooks."""
    from test_import_graph import LIB, imports, modules

    mods = modules(LIB / "frozenseg")
    return [f"{m} imports {target}" for m, path in mods.items() if m.startswith(f"frozenseg.{package}")
            for target, _, _ in imports(m, path, mods) if target.startswith(NOT_METHOD)]


def test_the_baselines_package_is_the_method_only():
    """The networks, their training loop and the nnU-Net adapter; notebook 06's sweep, its nnU-Net runs and its
    tables, and notebook 08, live in frozenseg.experiments (no module left behind at the old paths)."""
    from test_import_graph import LIB

    assert foreign_imports("baselines") == []
    assert sorted(p.name for p in (LIB / "frozenseg" / "baselines").glob("*.py")) == [
        "__init__.py", "nets.py", "nnunet.py", "train.py"]
    for name in ("import_predictions", "nnunet_sweep", "write_dataset", "test_units", "runs_root"):
        assert hasattr(baselines, name) and not hasattr(nnunet, name), name


# Per notebook: the experiments modules it may import; besides them only the infrastructure below.
NOTEBOOK_EXPERIMENTS = {"06_trained_baselines": {"baselines", "baselines_report", "peers"}, "07_fewshot_decoder": {"fewshot"},
                        "08_medical_pretraining": {"pretraining"}}
INFRASTRUCTURE = {"frozenseg.study", "frozenseg.results", "frozenseg.evaluation", "frozenseg.report", "frozenseg.viz",
                  "frozenseg.errors"}


@pytest.mark.parametrize("name", sorted(NOTEBOOK_EXPERIMENTS))
def test_notebooks_06_to_08_call_their_own_experiments_module_only(name):
    """Each imports its experiment code from its own frozenseg.experiments module(s), never from a method package,
    and names no frozenseg module by an alias a newcomer cannot read (``ev`` is the house's name for evaluation)."""
    import ast

    from frozenseg import paths

    allowed = INFRASTRUCTURE | {f"frozenseg.experiments.{m}" for m in NOTEBOOK_EXPERIMENTS[name]}
    used, aliases = set(), []
    for node in ast.walk(ast.parse((paths.NOTEBOOKS / f"{name}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("frozenseg"):
            subs = [f"{node.module}.{a.name}" for a in node.names] if node.module == "frozenseg" else [node.module]
            used |= set(subs)
            aliases += [a.asname for a in node.names if a.asname and node.module == "frozenseg"]
        elif isinstance(node, ast.Import):
            used |= {a.name for a in node.names if a.name.startswith("frozenseg")}
            aliases += [a.asname for a in node.names if a.asname and a.name.startswith("frozenseg")]
    assert used and used <= allowed, sorted(used - allowed)
    assert used & {f"frozenseg.experiments.{m}" for m in NOTEBOOK_EXPERIMENTS[name]}
    assert all(a == "ev" or len(a) > 2 for a in aliases), aliases
