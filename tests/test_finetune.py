"""Few-shot decoder tuning on tiny synthetic images: copy semantics, frozen encoders, early stopping, failures."""
import math

import numpy as np
import pytest
import torch

from frozenseg import finetune
from frozenseg.boxes import mask_to_box
from frozenseg.data.types import Case
from frozenseg.errors import ConfigError
from frozenseg.experiments import fewshot
from frozenseg.experiments.fewshot import labelled_set, predict_rows, static_fewshot_box
from frozenseg.finetune import STATUS_FAILED, TuningFailedError, tune_decoder
from frozenseg.training import validation_split

FAST = {"epochs": 2, "lr": 5e-4, "batch_size": 2, "patience": 2}


def _ellipse_case(i: int, h: int = 72, w: int = 96) -> Case:
    """A dark ellipse on noisy grey, its position and size varying with ``i``."""
    rng = np.random.default_rng(i)
    img = (rng.random((h, w, 3)) * 40 + 140).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    cy, cx, ry, rx = 30 + 3 * i, 40 + 5 * i, 14 + 2 * i, 20 + i
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    img[mask] = 40
    return Case(case_id=f"toy{i}", domain="toy", image=img, mask=mask)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny workloads: one torch thread (two threads thrash when the cores are shared), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy(litemedsam):
    """Four toy cases with their (cached) embeddings."""
    from frozenseg.cache import EmbeddingCache

    cases = [_ellipse_case(i) for i in range(4)]
    embs = EmbeddingCache().get_many(litemedsam, [c.image for c in cases], progress=False)
    return cases, embs


def _tune(model, toy, boxes=None, masks=None, **kw):
    """Tune on the toy set with GT boxes unless told otherwise."""
    cases, embs = toy
    boxes = boxes if boxes is not None else [mask_to_box(c.mask) for c in cases]
    masks = masks if masks is not None else [c.mask for c in cases]
    return tune_decoder(model, embs, masks, boxes, **{**FAST, "seed": 0, **kw})


def _snapshot(module) -> dict:
    """Detached copies of a module's parameters."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_loss_decreases_and_shared_model_stays_frozen(litemedsam, toy):
    before = _snapshot(litemedsam.mask_decoder)
    loose = static_fewshot_box(toy[0])
    run = _tune(litemedsam, toy, boxes=[loose(c) for c in toy[0]], val_fraction=0.0, epochs=4)
    losses = [h["train_loss"] for h in run.history if h["epoch"] > 0]
    assert run.ok and run.epochs_run == 4 and losses[-1] < losses[0]
    after = litemedsam.mask_decoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the shared decoder must not change"
    assert not any(p.requires_grad for p in litemedsam.parameters())
    for part in (litemedsam.image_encoder, litemedsam.prompt_encoder, litemedsam.mask_decoder):
        assert all(p.grad is None for p in part.parameters()), "frozen parts must receive no gradient"
    assert any(not torch.equal(before[k], v) for k, v in run.decoder.state_dict().items()), "the copy was trained"
    assert run.model.prompt_encoder is litemedsam.prompt_encoder and run.model.cache_id != litemedsam.cache_id


def test_paired_batch_matches_decode_tensors_in_logits_and_weight_gradients(litemedsam, toy):
    """The tuner's batched decoder pass equals the model's own per-image decoder, gradients to every weight too."""
    from frozenseg.models.fast_decoder import supports

    cases, embs = toy
    view = finetune.decoder_view(litemedsam, finetune.trainable_copy(litemedsam.mask_decoder))
    assert supports(view)
    img, sparse, dense = finetune.prompt_tensors(litemedsam, embs, [mask_to_box(c.mask) for c in cases])
    batch = {"img": img, "sparse": sparse, "dense": dense}
    idx = [2, 0, 3]
    ref = view.decode_tensors(img[idx], sparse[idx], dense[idx])[0][:, 0]
    weight = torch.linspace(-1, 1, ref.shape[-1])
    (ref * weight).sum().backward()
    g_ref = {n: p.grad.clone() for n, p in view.mask_decoder.named_parameters() if p.grad is not None}
    view.mask_decoder.zero_grad(set_to_none=True)
    out = finetune.decoder_logits(view, batch, idx)
    (out * weight).sum().backward()
    assert torch.allclose(out, ref, atol=1e-3, rtol=1e-4)
    # A key bias shifts every attention score of a query by the same amount, which softmax ignores: its true
    # gradient is zero (the reference gives rounding noise, the batched pass may drop the bias altogether).
    used = {n for n, g in g_ref.items() if g.abs().max() > 0 and not n.endswith("k_proj.bias")}
    assert used and any(n.startswith("output_upscaling") for n in used)
    for n, p in view.mask_decoder.named_parameters():
        if n in used:
            assert p.grad is not None, n
            assert torch.allclose(p.grad, g_ref[n], atol=2e-3 * float(g_ref[n].abs().max()), rtol=1e-3), n


def test_tuned_decode_has_the_frozen_models_geometry(litemedsam, toy):
    cases, embs = toy
    run = _tune(litemedsam, toy, epochs=1)
    box = mask_to_box(cases[0].mask)
    tuned, frozen = run.decode(embs[0], box), litemedsam.decode(embs[0], boxes=box)
    assert tuned.logits.shape == frozen.logits.shape == (1, *cases[0].mask.shape)
    assert tuned.low_res.shape == frozen.low_res.shape


def test_same_seed_gives_identical_weights(litemedsam, toy):
    a, b = _tune(litemedsam, toy, seed=3), _tune(litemedsam, toy, seed=3)
    assert a.best_epoch == b.best_epoch and a.history == b.history
    assert all(torch.equal(v, b.decoder.state_dict()[k]) for k, v in a.decoder.state_dict().items())


def test_early_stopping_reads_only_the_validation_split(litemedsam, toy):
    cases, _ = toy
    tr, va = validation_split(4, 0.25, 0)
    assert sorted(tr + va) == [0, 1, 2, 3] and len(va) == 1
    masks = [~c.mask if i in va else c.mask for i, c in enumerate(cases)]   # a validation label that tuning cannot fit
    run = _tune(litemedsam, toy, masks=masks, val_fraction=0.25, epochs=6, patience=2)
    assert run.val_index == va and run.best_epoch == 0 and run.epochs_run == 2, run.history
    frozen = litemedsam.mask_decoder.state_dict()
    assert all(torch.equal(v, frozen[k]) for k, v in run.decoder.state_dict().items()), "epoch 0 (untuned) kept"


def test_nan_loss_stops_the_run_as_failed(litemedsam, toy, monkeypatch):
    real, calls = finetune.tuner.dice_bce_loss, {"n": 0}

    def flaky(*a):
        calls["n"] += 1
        return real(*a) * (math.nan if calls["n"] >= 3 else 1.0)

    monkeypatch.setattr(finetune.tuner, "dice_bce_loss", flaky)
    run = _tune(litemedsam, toy, epochs=3)
    assert run.status == STATUS_FAILED and "non-finite" in run.message
    with pytest.raises(TuningFailedError):
        run.decode(toy[1][0], mask_to_box(toy[0][0].mask))
    rows = predict_rows(litemedsam, toy[0][:2], toy[1][:2], lambda c: mask_to_box(c.mask), run)
    assert all(r["flag"] == "tuning_failed" and math.isnan(r["dice"]) for r in rows)


def test_frame_targets_pad_below_a_wide_image_and_concept_search_reads_the_same(litemedsam, toy):
    """The decoder tuner's targets (frozenseg.training) are concept search's: the mask area-resized into the low-res
    frame, the rows below a wide image padding (zero, invalid)."""
    from frozenseg.concept import DecoderBackend
    from frozenseg.training import frame_targets

    cases, embs = toy
    side = 64
    tgt, valid = frame_targets(litemedsam, [c.mask for c in cases], embs, side)
    rows, cols = cases[0].mask.shape
    h = round(side * rows / cols)
    assert tgt.shape == valid.shape == (len(cases), side, side)
    assert valid[:, :h].all() and not valid[:, h:].any() and not tgt[:, h:].any()
    for i, c in enumerate(cases):
        assert abs(float(tgt[i, :h].mean()) - c.mask.mean()) < 0.02      # area resizing keeps the foreground share
        t, v = DecoderBackend(litemedsam).target(c.mask, embs[i], side)
        assert torch.equal(t, tgt[i]) and torch.equal(v.float(), valid[i])


def test_budget_larger_than_the_pool_is_a_clear_error():
    cases = [_ellipse_case(i) for i in range(3)]
    with pytest.raises(ConfigError, match="N=5"):
        labelled_set(cases, 5, seed=0)
    assert [c.case_id for c in labelled_set(cases, 2, 0)] == [c.case_id for c in labelled_set(cases, 3, 0)
                                                              if c.case_id in {x.case_id for x in labelled_set(cases, 2, 0)}]


def test_static_fewshot_box_is_the_mean_normalised_gt_box():
    cases = [_ellipse_case(i) for i in range(3)]
    box_of = static_fewshot_box(cases)
    norm = np.mean([mask_to_box(c.mask) / [96, 72, 96, 72] for c in cases], axis=0)
    big = np.zeros((144, 192, 3), np.uint8)
    assert np.allclose(box_of(cases[0]), norm * [96, 72, 96, 72])
    assert np.allclose(box_of(Case("big", "toy", big, np.zeros((144, 192), bool))), norm * [192, 144, 192, 144])


def test_bad_inputs_are_refused(litemedsam, toy):
    cases, embs = toy
    with pytest.raises(ConfigError):
        tune_decoder(litemedsam, embs[:2], [c.mask for c in cases], [mask_to_box(c.mask) for c in cases])
    with pytest.raises(ConfigError):
        validation_split(4, 1.0, 0)


# ----------------------------------------------------------------------------- issue 20


def test_gt_box_arm_predicts_empty_on_a_negative_test_image_and_scores_it(litemedsam, toy):
    """A 2D negative stays a test unit: the GT-box arm has no box there, predicts an empty mask (frozen and tuned)
    and the empty-mask rule scores it; no crash, the row says it is a negative."""
    from frozenseg.cache import EmbeddingCache
    from frozenseg.experiments.fewshot import arm_boxes

    cases, _ = toy
    neg = Case(case_id="neg", domain="toy", image=cases[0].image, mask=np.zeros(cases[0].mask.shape, bool))
    emb = EmbeddingCache().get_many(litemedsam, [neg.image], progress=False)
    boxes = arm_boxes(None, "toy", 0, 4, "gt_box", cases)
    run = _tune(litemedsam, toy, epochs=1)
    for r in (None, run):
        row = predict_rows(litemedsam, [neg, cases[1]], [emb[0], toy[1][1]], boxes.test, r)
        assert row[0]["dice"] == 1.0 and row[0]["negative"] and not row[0]["_mask"].any()
        assert not row[1]["negative"] and "hd95_unit" in row[1]


def test_frozen_rows_count_and_summaries_go_through_the_evaluation_core(monkeypatch):
    """Frozen-decoder rows are finished rows (status ok), so ev.scored_units counts them; the tables call ev."""
    import pandas as pd

    from frozenseg import evaluation as ev

    calls = []
    for name in ("scored_units", "seed_summary"):
        real = getattr(ev, name)
        monkeypatch.setattr(ev, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    info = fewshot.run_info(None)
    assert info["status"] == "ok"
    rows = [{"domain": "isic", "seed": s, "unit": "case", "case_id": f"c{c}", "arm": "gt_box", "decoder": dec,
             "n_labels": n, "dice": d + 0.01 * s, "flag": "", **(info if dec == "frozen" else {"status": "ok"})}
            for s in (0, 1) for c in range(2) for dec, n, d in (("frozen", 0, 0.7), ("tuned", 2, 0.8))]
    df = pd.DataFrame(rows)
    curves = fewshot.fewshot_curves(df)
    assert set(curves.decoder) == {"frozen", "tuned"} and {"scored_units", "seed_summary"} <= set(calls)
    assert curves[curves.decoder == "frozen"].sd.iloc[0] == pytest.approx(np.std([0.7, 0.71], ddof=1))
    table = fewshot.summarize_fewshot(df)
    assert table["N=2 frozen"].iloc[0].startswith("0.705 ±")


def test_volume_scores_are_3d_through_the_evaluation_core():
    import pandas as pd

    from frozenseg.data.types import Volume

    mask = np.zeros((8, 8, 4), bool)
    mask[2:6, 2:6, 1:3] = True
    vol = Volume(volume_id="v0", domain="spleen", image=np.zeros((8, 8, 4), np.uint8), mask=mask,
                 spacing=(1.0, 1.0, 2.0))
    slices = pd.DataFrame([{"case_id": f"v0_z{z}", "volume_id": "v0", "slice_index": z, "method": "tuned_gt_box_n2",
                            "arm": "gt_box", "decoder": "tuned", "n_labels": 2, "status": "ok", "flag": "",
                            "box_iou": 1.0, "pred_iou": 0.9, "dice": 1.0, "_mask": mask[:, :, z]} for z in range(4)]
                          + [{"case_id": f"v0_z{z}", "volume_id": "v0", "slice_index": z, "method": "tuned_gt_box_n3",
                              "arm": "gt_box", "decoder": "tuned", "n_labels": 3, "status": "failed",
                              "flag": "tuning_failed", "dice": np.nan, "_mask": None} for z in range(4)])
    out = fewshot.volume_scores(slices, {"v0": vol}).set_index("method")
    ok, bad = out.loc["tuned_gt_box_n2"], out.loc["tuned_gt_box_n3"]
    assert ok.dice == 1.0 and ok.slices_scored == 4 and ok.unit == "volume" and not ok.negative
    assert np.isnan(bad.dice) and bad.flag == "tuning_failed" and not bad.negative


def test_the_test_split_comes_from_the_evaluation_core(monkeypatch):
    from frozenseg import evaluation as ev

    class Stop(Exception):
        pass

    seen = []

    def spy(data, n_test=None):
        seen.append((data, n_test))
        raise Stop

    monkeypatch.setattr(ev, "test_units", spy)

    class Stub:
        def data(self, domain):
            return "the-data"

    with pytest.raises(Stop):
        fewshot.domain_results(Stub(), "isic", 0, {"n_test": 7, "budgets": (1,)})
    assert seen == [("the-data", 7)]


def test_localizer_note_names_what_the_arm_fitted():
    import pandas as pd

    from frozenseg.experiments.fewshot import route_localizer
    from frozenseg.pipeline.router import get_route

    name = route_localizer(get_route("kvasir"))
    assert name.startswith(get_route("kvasir").localizer["name"]) and name.endswith("of route kvasir")
    df = pd.DataFrame({"domain": ["kvasir", "kvasir", "spleen"], "arm": ["localizer", "gt_box", "localizer"],
                       "localizer": [name, "ground-truth box", "volume-prior box per slice"]})
    note = fewshot.localizer_note(df, {"kvasir": "Kvasir"})
    assert f"Kvasir: {name}" in note and "spleen: volume-prior box per slice" in note and "ground-truth" not in note


def test_the_finetune_package_is_the_tuning_method_only():
    """The tuning loop stays; notebook 07's arms, rows, tables and plot live in frozenseg.experiments.fewshot (no
    module left behind, no import of experiment, report, results, study or notebook code)."""
    from test_baselines import foreign_imports
    from test_import_graph import LIB

    assert foreign_imports("finetune") == []
    assert sorted(p.name for p in (LIB / "frozenseg" / "finetune").glob("*.py")) == ["__init__.py", "tuner.py"]
    for name in ("run_fewshot", "summarize_fewshot", "fewshot_params", "tune_arm"):
        assert hasattr(fewshot, name) and not hasattr(finetune, name), name


@pytest.fixture
def folder_study(ellipse_folder, litemedsam, monkeypatch):
    """A smoke study of one user folder domain 'mine' (no routes.yaml entry), on one torch thread."""
    from frozenseg.study import setup

    monkeypatch.setenv("FROZENSEG_THREADS", "1")        # setup() sets torch's threads; this module runs on one
    return setup(profile="smoke", seeds=[0], domains=["mine"], folders={"mine": str(ellipse_folder)}, verbose=False)


def test_notebook_07_on_a_folder_domain_routes_its_localizer_arm_through_the_router(folder_study, monkeypatch):
    """A folder domain has no route of its own: the localizer arm's route is chosen among the profile's router
    candidates by the router's cross-validation on the same labels, and every arm runs."""
    from frozenseg.experiments import route_choice
    from frozenseg.pipeline.router import get_route

    with pytest.raises(ConfigError):
        get_route("mine")
    seen = []
    real = route_choice.route_scores
    monkeypatch.setattr(route_choice, "route_scores", lambda model, cases, *a, **k: seen.append(len(cases))
                        or real(model, cases, *a, **k))
    params = {**fewshot.fewshot_params(folder_study.profile), "budgets": (4,), "epochs": 1}
    df = fewshot.domain_results(folder_study, "mine", 0, params)
    assert set(df.arm) == {"gt_box", "localizer", "mean_box"} and df.dice.notna().all()
    assert seen == [4], "the router cross-validated the profile's router candidates on the four labels"
    names = set(df[df.arm == "localizer"].localizer)
    chosen = route_choice.route_choice(folder_study, "mine", 0, 4)      # the cached choice
    assert chosen["cached"] and chosen["name"] in folder_study.profile.pipeline["router_candidates"]
    assert names == {f"{fewshot.route_localizer(chosen['route'])}, chosen for mine by the router "
                     f"({route_choice.CV})"}


def test_notebook_07_skips_the_localizer_arm_of_a_folder_of_volumes_and_says_why(capsys):
    """The volume localizer is spleen's: a user's folder of 3D volumes gets no localizer arm (a printed note), never
    spleen's prior."""
    from frozenseg.config import get_profile
    from frozenseg.data import DomainData
    from frozenseg.data.phantoms import make_phantom_volume
    from frozenseg.errors import DataError
    from frozenseg.study import Study

    study = Study(profile=get_profile("smoke"), seeds=[0], domains=["ct"], source="phantom", model_key="litemedsam",
                  folders={"ct": "."})
    vols = [make_phantom_volume(i, 48, 8, 0) for i in range(3)]
    study._data["ct"] = DomainData.from_volumes("ct", "folder", vols[:2], vols[2:], {})
    assert "spleen only" in fewshot.skipped_arms(study, "ct")["localizer"]
    with pytest.raises(DataError, match="skipped"):
        fewshot.arm_boxes(study, "ct", 0, 2, "localizer", [])
    study._data["spleen"] = DomainData.from_volumes("spleen", "phantom", vols[:2], vols[2:], {})
    assert fewshot.skipped_arms(study, "spleen") == {}
