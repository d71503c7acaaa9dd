"""Concept search, HUE and the annotation loop: learning, frozen decoder, resume, selection, bad inputs."""
import json

import numpy as np
import pytest
import torch

import pandas as pd

from frozenseg import evaluation as ev
from frozenseg.concept import (EMPTY_U, FLAG_COLLAPSED, FLAG_SINGLE, LOWEST_U_SPLIT, ConceptCollapsedError,
                               DecoderBackend, FitSettings, LoopConfig, annotation_loop, fit_concept,
                               ground_truth_annotator, hue_from_logits, lowest_u_picks, predict, select)
from frozenseg.data.splits import subsample_train
from frozenseg.data.types import Case, DomainData
from frozenseg.errors import ConfigError, DataError
from frozenseg.evaluation.metrics import dice


class FakeBackend:
    """A differentiable stand-in: logits = a * image + b with (a, b) = the concept's mean token."""

    key, dim = "fake", 2

    def features(self, images, desc=""):
        return [np.asarray(im, dtype=np.float32) for im in images]

    def logits(self, feats, tokens):
        a, b = tokens.mean(0)
        return torch.stack([torch.as_tensor(f) for f in feats]) * a * 10 + b * 10 - 5

    def target(self, mask, feat, side):
        return torch.as_tensor(mask, dtype=torch.float32), torch.ones(mask.shape, dtype=torch.bool)

    def to_image(self, low, feat):
        return low.detach().numpy()

    def box_logits(self, feat, box):
        x0, y0, x1, y1 = (int(v) for v in box)
        out = -np.ones(feat.shape, np.float32) * 5
        out[y0:y1 + 1, x0:x1 + 1] = 5
        return out

    def tokens_like(self, k):
        return (k, 2)


def _fake_pool(n=10, size=16):
    rng = np.random.default_rng(1)
    imgs, masks = [], []
    for i in range(n):
        m = np.zeros((size, size), bool)
        r = 2 + i % 5
        m[3:3 + r, 4:4 + r + i % 3] = True
        imgs.append(m * (0.6 + 0.4 * rng.random((size, size))) + 0.3 * rng.random((size, size)) * (i % 4 == 0))
        masks.append(m)
    return imgs, masks


def _ellipses(n=3):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :112]
    out = []
    for i in range(n):
        img = (rng.random((96, 112, 3)) * 40 + 150).astype(np.uint8)
        m = ((yy - 44 - 3 * i) / 22) ** 2 + ((xx - 54 + 4 * i) / 28) ** 2 < 1
        img[m] = 40
        out.append((img, m))
    return out


@pytest.fixture(scope="module")
def lite(litemedsam):
    data = _ellipses()
    be = DecoderBackend(litemedsam)
    return be, be.features([im for im, _ in data]), [m for _, m in data]


# ---------------------------------------------------------------- LiteMedSAM: learning through the frozen decoder


def test_loss_decreases_and_concept_segments(lite):
    be, feats, masks = lite
    c = fit_concept(be, feats[:2], masks[:2], FitSettings(k=2, epochs=8, lr=0.1, lr_min=1e-3), seed=0)
    assert c.losses[-1] < 0.5 * c.losses[0]
    pred = predict(be, c, feats[2:])[0]
    assert pred.shape == masks[2].shape and dice(pred, masks[2]) > 0.5


def test_concept_moves_while_decoder_stays_frozen(lite):
    be, feats, masks = lite
    parts = (be.model.prompt_encoder, be.model.mask_decoder)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in parts]
    s = FitSettings(k=2, epochs=3, lr=0.1, init="random")
    from frozenseg.concept.core import init_tokens

    start = init_tokens((2, be.dim), s, seed=0).numpy()
    c = fit_concept(be, feats[:1], masks[:1], s, seed=0)
    assert np.abs(c.tokens - start).max() > 1e-3
    assert c.flag in (FLAG_SINGLE, FLAG_COLLAPSED)
    for m, b in zip(parts, before):
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in b.items())
    assert not any(p.requires_grad for p in be.model.parameters())


def test_fast_decoder_matches_the_models_own_decoder(lite):
    be, feats, masks = lite
    from frozenseg.models.fast_decoder import PreparedDecoder, supports

    assert supports(be.model)
    dec = PreparedDecoder(be.model, feats)
    for seed in (0, 1):
        tok = torch.nn.Parameter(torch.randn((3, be.dim), generator=torch.Generator().manual_seed(seed)) * 0.3)
        ref = be.reference_logits(feats, tok)
        (ref * torch.linspace(-1, 1, ref.shape[-1])).sum().backward()
        g_ref, tok.grad = tok.grad.clone(), None
        out = dec(tok)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        assert out.shape == ref.shape
        assert torch.allclose(out, ref, atol=1e-3, rtol=1e-4)
        assert torch.allclose(tok.grad, g_ref, atol=1e-3 * float(g_ref.abs().max()), rtol=1e-3)
        assert torch.allclose(dec(tok, slice(1, 3)), ref[1:3], atol=1e-3, rtol=1e-4)
    s = FitSettings(k=2, epochs=4, lr=0.1, lr_min=1e-3)
    fast = fit_concept(be, feats[:2], masks[:2], s, seed=0)
    slow = fit_concept(DecoderBackend(be.model, be.cache, fast=False), feats[:2], masks[:2], s, seed=0)
    assert np.allclose(fast.tokens, slow.tokens, atol=1e-4) and np.allclose(fast.losses, slow.losses, rtol=1e-4)


def test_batched_box_decodes_match_the_models_decode(lite):
    be, feats, masks = lite
    from frozenseg.boxes import mask_to_box

    boxes = [mask_to_box(m) + np.array([-3, 2, 4, -1]) * i for i, m in enumerate(masks)]
    many = be.box_logits_many(feats, boxes, batch=2)
    for f, b, lg in zip(feats, boxes, many):
        ref = be.box_logits(f, b)
        assert lg.shape == ref.shape and np.allclose(lg, ref, atol=1e-3)
        assert ((lg > 0) == (ref > 0)).mean() > 0.999


def test_chunked_fit_equals_full_batch():
    be, (imgs, masks) = FakeBackend(), _fake_pool()
    feats = be.features(imgs)
    s = FitSettings(k=2, epochs=6, lr=0.1, lr_min=1e-3)
    full = fit_concept(be, feats[:7], masks[:7], s.with_(chunk=100), seed=2)
    parts = fit_concept(be, feats[:7], masks[:7], s.with_(chunk=3), seed=2)
    assert np.allclose(full.tokens, parts.tokens, atol=1e-6) and np.allclose(full.losses, parts.losses, rtol=1e-5)


# ---------------------------------------------------------------- HUE


def test_hue_empty_prediction_is_two():
    h = hue_from_logits(-np.ones((20, 20)) * 8, lambda box: pytest.fail("no box for an empty mask"))
    assert h.u == EMPTY_U and h.empty_mask


def test_hue_perfect_concept_is_small():
    m = np.zeros((30, 30), bool)
    m[5:20, 8:25] = True
    lg = np.where(m, 12.0, -12.0)
    h = hue_from_logits(lg, lambda box: lg)
    assert h.u < 0.05 and h.box_iou == 1.0


def test_hue_disagreement_raises_u():
    m = np.zeros((30, 30), bool)
    m[5:20, 8:25] = True
    lg = np.where(m, 12.0, -12.0)
    assert hue_from_logits(lg, lambda box: -lg).u > 0.9


def _u_rows(n_images, seeds=3, starts=(1, 5)):
    """Last-round HUE test rows that repeat ``n_images`` images over start sizes and seeds (U falls as Dice rises)."""
    rng = np.random.default_rng(0)
    base = rng.random(n_images)
    return pd.DataFrame([{"domain": "d", "split": "test", "unit": "case", "case_id": f"img{i}", "seed": s,
                          "start": st, "strategy": "hue", "round": 2, "u": 1.5 - base[i] + 0.05 * rng.random(),
                          "dice": base[i], "empty_mask": False}
                         for s in range(seeds) for st in starts for i in range(n_images)])


def test_u_vs_dice_interval_resamples_images_not_rows():
    """Rows repeat each image over start sizes and seeds: the bootstrap resamples images (evaluation core)."""
    from frozenseg.experiments import concept_report

    few = concept_report.correlation_table(_u_rows(4), n_boot=200).iloc[0]
    assert few["pairs (starts x seeds x images)"] == 24 and few["images"] == 4 and few["resampled units"] == 4
    assert few["rho"] < -0.8 and "(no interval)" in few["Spearman rho (U vs Dice) [interval]"], \
        f"fewer than {ev.MIN_UNITS} images: no interval, however many rows repeat them"
    many = concept_report.correlation_table(_u_rows(12), n_boot=200).iloc[0]
    got = ev.spearman_interval(_u_rows(12).u, _u_rows(12).dice, _u_rows(12).case_id, n_boot=200, seed=0)
    assert many["resampled units"] == 12 and many["Spearman rho (U vs Dice) [interval]"] == ev.fmt_ci(
        got["rho"], got["lo"], got["hi"])
    assert not hasattr(__import__("frozenseg.concept.hue", fromlist=["x"]), "rank_correlation"), "the copy is gone"


# ---------------------------------------------------------------- the loop


def _cfg(strategy="hue", **kw):
    s = FitSettings(k=1, epochs=5, lr=0.1, lr_min=1e-3)
    return LoopConfig(strategy=strategy, start=2, rounds=3, per_round=2, seed=3, settings=s, **kw)


def test_loop_resumes_after_interruption_with_same_result(tmp_path):
    be, (imgs, masks) = FakeBackend(), _fake_pool()
    feats = be.features(imgs)
    full = annotation_loop(be, feats, ground_truth_annotator(masks), _cfg(), feats[:3], masks[:3], pool_truth=masks,
                           state_path=tmp_path / "a.json")
    calls = {"n": 0}

    def flaky(i):
        calls["n"] += 1
        if calls["n"] == 5:           # dies mid-round 2 (2 start + 2 round-1 labels answered)
            raise KeyboardInterrupt
        return masks[i]

    path = tmp_path / "b.json"
    with pytest.raises(KeyboardInterrupt):
        annotation_loop(be, feats, flaky, _cfg(), feats[:3], masks[:3], pool_truth=masks, state_path=path)
    assert json.loads(path.read_text())["state"]["round"] == 1
    asked = []
    resumed = annotation_loop(be, feats, lambda i: asked.append(i) or masks[i], _cfg(), feats[:3], masks[:3],
                              pool_truth=masks, state_path=path)
    assert resumed.rows == full.rows and resumed.labelled == full.labelled
    assert np.array_equal(np.asarray(resumed.tokens), np.asarray(full.tokens))
    assert len(asked) == 4, "images labelled before the interruption are not asked again"
    with pytest.raises(ConfigError, match="other settings"):
        annotation_loop(be, feats, ground_truth_annotator(masks), _cfg(test_u="none"), feats[:3], masks[:3],
                        state_path=path)


def test_random_and_hue_differ_and_respect_budget():
    be, (imgs, masks) = FakeBackend(), _fake_pool()
    feats = be.features(imgs)
    hue = annotation_loop(be, feats, ground_truth_annotator(masks), _cfg("hue"), pool_truth=masks)
    rnd = annotation_loop(be, feats, ground_truth_annotator(masks), _cfg("random"), pool_truth=masks,
                          warm_round0=hue.at_round(0))
    for st in (hue, rnd):
        assert len(st.labelled) == 2 + 3 * 2 == len(set(st.labelled))
        for r in range(4):
            assert sum(x["labelled"] for x in st.rows if x["round"] == r) == 2 + 2 * r
    assert hue.history[0] == rnd.history[0]
    assert hue.labelled != rnd.labelled


def test_select_top_k_by_u_and_random_as_the_next_of_the_draw():
    u = {0: 0.1, 1: 2.0, 2: 0.7, 3: 0.7, 4: 0.3}
    assert select("hue", list(u), u, 2) == [1, 2]
    assert select("random", [4, 1, 3], u, 2) == [1, 3], "random: the next images of the seeded draw (pool order)"
    assert len(select("hue", [0, 4], u, 5)) == 2


def test_lowest_u_picks_read_u_only_and_pick_the_lowest_round():
    def row(split, rnd, j, u, d):
        return {"split": split, "round": rnd, "index": j, "u": u, "dice": d}

    rows = [row("test", 0, 0, 0.9, 0.95), row("test", 1, 0, 0.3, 0.40), row("test", 2, 0, 0.5, 0.99),
            row("test", 0, 1, 0.2, 0.10), row("test", 1, 1, 0.2, 0.90), row("test", 2, 1, 1.0, 0.95),
            row("pool", 2, 0, 0.0, 1.00), row(LOWEST_U_SPLIT, 2, 1, 0.0, 1.0),
            {"split": "test", "round": 2, "index": None, "unit": "volume", "dice": 1.0}]
    picks = lowest_u_picks(rows)
    assert picks == {0: (1, 0.3), 1: (1, 0.2)}          # image 0: lowest U, not best Dice; image 1: tie -> later
    assert lowest_u_picks(rows, upto=0) == {0: (0, 0.9), 1: (0, 0.2)}
    blind = [{k: v for k, v in r.items() if k != "dice"} for r in rows]
    flipped = [{**r, "dice": 1.0 - r["dice"]} for r in rows]
    assert lowest_u_picks(blind) == picks == lowest_u_picks(flipped), "the pick must not read ground truth"


def test_loop_scores_each_image_with_its_lowest_u_round(tmp_path):
    be, (imgs, masks) = FakeBackend(), _fake_pool()
    feats = be.features(imgs)
    cfg = _cfg(test_u="all", refit_epochs=2)
    st = annotation_loop(be, feats, ground_truth_annotator(masks), cfg, feats[:4], masks[:4], pool_truth=masks)
    assert [len(x) for x in st.losses] == [5, 2, 2, 2]
    plain = {(r["round"], r["index"]): r for r in st.rows if r["split"] == "test"}
    for rnd in range(cfg.rounds + 1):
        picks = lowest_u_picks(st.rows, upto=rnd)
        low = [r for r in st.rows if r["split"] == LOWEST_U_SPLIT and r["round"] == rnd]
        assert sorted(r["index"] for r in low) == [0, 1, 2, 3]
        for r in low:
            src = plain[(picks[r["index"]][0], r["index"])]
            assert r["u_round"] == picks[r["index"]][0] and r["u"] == src["u"] == min(
                plain[(k, r["index"])]["u"] for k in range(rnd + 1))
            assert r["dice"] == src["dice"]
    calls = {"n": 0}

    def flaky(i):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return masks[i]

    path = tmp_path / "low.json"
    with pytest.raises(KeyboardInterrupt):
        annotation_loop(be, feats, flaky, cfg, feats[:4], masks[:4], pool_truth=masks, state_path=path)
    resumed = annotation_loop(be, feats, ground_truth_annotator(masks), cfg, feats[:4], masks[:4], pool_truth=masks,
                              state_path=path)
    assert resumed.rows == st.rows, "picked masks of earlier rounds are rebuilt on resume"


# ---------------------------------------------------------------- the study: shared label draw, test units


class _CaseBackend(FakeBackend):
    """FakeBackend on RGB cases (the first channel scaled to [0, 1])."""

    cache_id = "fake-cases"

    def features(self, images, desc=""):
        return [np.asarray(im[..., 0], dtype=np.float32) / 255 for im in images]


def _case(i, fg=True, size=16):
    imgs, masks = _fake_pool(i + 1, size)
    m = masks[i] if fg else np.zeros((size, size), bool)
    img = np.repeat((np.clip(imgs[i] if fg else 0.3 * imgs[i], 0, 1) * 255).astype(np.uint8)[..., None], 3, 2)
    return Case(f"c{i:02d}" if fg else f"neg{i:02d}", "toy", img, m)


class _Study:
    """What run_domain reads of a study: data, the profile's name, the data source."""

    def __init__(self, data):
        self._d, self.profile = data, type("P", (), {"name": "concepttest"})()

    def data(self, domain):
        return self._d

    def source_of(self, domain):
        return "phantom"


def test_concept_labels_are_the_shared_seeded_draw_and_negatives_are_scored(tmp_path, monkeypatch):
    """Start set and random rounds label exactly subsample_train(train, L, seed); a negative test image is scored
    by the empty rule."""
    from frozenseg.experiments.concept_search import label_pool, run_domain

    monkeypatch.setenv("FROZENSEG_OUT", str(tmp_path))
    train = [_case(i) for i in range(9)]
    test = [_case(9), _case(10, fg=False)]
    data = DomainData("toy", "phantom", train=train, test=test)
    params = {"k": 1, "epochs": 3, "refit_epochs": 2, "lr": 0.1, "lr_min": 1e-3, "rounds": 2, "per_round": 2,
              "starts": (1, 3), "pool": None, "n_test": None}
    seed = 4
    assert [c.case_id for c in label_pool(train, 5, seed)][:3] == [c.case_id for c in label_pool(train, None, seed)][:3]
    df, _ = run_domain(_Study(data), _CaseBackend(), "toy", seed, params)
    pool = df[(df.split == "pool") & df.labelled.astype(bool)]
    for (strategy, start, rnd), g in pool.groupby(["strategy", "start", "round"]):
        n = start + rnd * params["per_round"]
        assert (g.n_labelled == n).all() and len(g) == n
        if strategy == "random" or rnd == 0:
            assert sorted(g.case_id) == sorted(c.case_id for c in subsample_train(train, n, seed)), (strategy, start, rnd)
    neg = df[(df.split == "test") & (df.case_id == "neg10")]
    assert len(neg) and neg.negative.all() and neg.dice.isin([0.0, 1.0]).all()
    pred_empty = neg.empty_mask.astype(bool)
    assert (neg.dice[pred_empty] == 1.0).all() and (neg.dice[~pred_empty] == 0.0).all(), ev.EMPTY_RULE
    assert set(df[df.split == "test"].unit) == {"case"}


def test_a_labelled_negative_costs_a_label_but_is_not_fitted(monkeypatch):
    from frozenseg.concept import loop

    fitted = []
    real = loop.fit_concept
    monkeypatch.setattr(loop, "fit_concept", lambda be, f, m, *a, **k: fitted.append(m) or real(be, f, m, *a, **k))
    be, (imgs, masks) = FakeBackend(), _fake_pool()
    masks = [np.zeros_like(masks[0])] + masks[1:]         # pool image 0 (the draw's first) has no target
    st = annotation_loop(be, be.features(imgs), ground_truth_annotator(masks), _cfg("random"), pool_truth=masks)
    assert st.labelled[:2] == [0, 1] and all(r["n_labelled"] == 2 + 2 * r["round"] for r in st.rows)
    assert [len(m) for m in fitted] == [1, 3, 5, 7], "each fit uses the labelled images that have a target"
    assert all(x.any() for m in fitted for x in m)
    with pytest.raises(DataError, match="has a target"):
        annotation_loop(be, be.features(imgs), ground_truth_annotator([np.zeros_like(m) for m in masks]), _cfg())


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    be, (imgs, masks) = FakeBackend(), _fake_pool()
    feats = be.features(imgs)
    with pytest.raises(DataError, match="support mask 1 is empty"):
        fit_concept(be, feats[:2], [masks[0], np.zeros_like(masks[1])], FitSettings(epochs=1))
    with pytest.raises(DataError, match="support set is empty"):
        fit_concept(be, [], [], FitSettings(epochs=1))
    with pytest.raises(ConfigError):
        LoopConfig(strategy="greedy")
    with pytest.raises(ConfigError):
        FitSettings().with_(learning_rate=1.0)
    with pytest.raises(ConfigError, match="pool of at least"):
        annotation_loop(be, feats[:1], ground_truth_annotator(masks), _cfg())


def test_single_support_and_collapse_are_flagged_not_silent():
    be, (imgs, masks) = FakeBackend(), _fake_pool()
    feats = be.features(imgs)
    one = fit_concept(be, feats[:1], masks[:1], FitSettings(k=1, epochs=5, lr=0.1), seed=0)
    assert one.flag == FLAG_SINGLE
    dead = FitSettings(k=1, epochs=0, init="zero")          # logits = -5 everywhere: empty masks
    assert fit_concept(be, feats[:2], masks[:2], dead).flag == FLAG_COLLAPSED
    with pytest.raises(ConceptCollapsedError):
        fit_concept(be, feats[:2], masks[:2], dead, require_nonempty=True)
    st = annotation_loop(be, feats, ground_truth_annotator(masks), LoopConfig(start=2, rounds=1, per_round=1,
                         settings=dead), feats[:2], masks[:2])
    test_rows = [r for r in st.rows if r["split"] == "test"]
    assert all(r["concept_flag"] == FLAG_COLLAPSED and r["dice"] == 0.0 for r in test_rows)
    assert all(r["u"] == EMPTY_U for r in test_rows if r["round"] == 1)


# ---------------------------------------------------------------- defaults: a user's first fit must not collapse

def _phantom_support(domain: str, n: int = 5, size: int = 64):
    """``n`` labelled phantom images of ``domain`` at ``size`` pixels (spleen: slices spread over one volume)."""
    from frozenseg.data.phantoms import make_phantom_case, make_phantom_volume

    if domain != "spleen":
        return [make_phantom_case(domain, i, size, 0) for i in range(n)]
    vol = make_phantom_volume(0, size, 12, 0)
    zs = vol.foreground_slices()
    return [vol.slice_case(z) for z in zs[:: max(1, len(zs) // n)][:n]]


@pytest.mark.slow
@pytest.mark.parametrize("domain", ["isic", "kvasir", "cxr", "spleen"])
def test_default_settings_learn_a_concept_on_every_phantom_domain(litemedsam, domain):
    """FitSettings() through LiteMedSAM: non-empty masks on the support (the source's lr 5e-4 gives Dice 0 here)."""
    assert FitSettings().epochs == 60 and FitSettings().lr == 0.1, "the defaults themselves are under test"
    cases = _phantom_support(domain)
    be = DecoderBackend(litemedsam)
    feats = be.features([c.image for c in cases])
    c = fit_concept(be, feats, [x.mask for x in cases], FitSettings(), seed=0)
    preds = predict(be, c, feats)
    scores = [dice(p, x.mask) for p, x in zip(preds, cases)]
    assert c.flag == "" and all(p.any() for p in preds), f"{domain}: the concept collapsed ({c.flag or 'empty masks'})"
    assert np.mean(scores) > 0.4, f"{domain}: support Dice {np.round(scores, 3)}"   # measured 0.66-0.94


def test_fit_concept_without_settings_uses_the_backend_preset(monkeypatch):
    from frozenseg.concept import core

    seen = []
    real = core.cosine_lr
    monkeypatch.setattr(core, "cosine_lr", lambda step, total, s: seen.append(s) or real(step, total, s))
    be, (imgs, masks) = FakeBackend(), _fake_pool()
    fit_concept(be, be.features(imgs[:2]), masks[:2], seed=0)
    assert seen[0] == FitSettings() and core.default_settings(be) == FitSettings()
    be.key, seen[:] = "sam3", []
    fit_concept(be, be.features(imgs[:2]), masks[:2], seed=0)
    assert seen[0] == core.SAM3_TEXT_SETTINGS and (seen[0].lr, seen[0].lr_min) == (5e-4, 5e-6)


# ---------------------------------------------------------------- comparison with the other methods: no choice on test


def _method_rows():
    """Concept rows where random selection wins on test only (the labelled pool is not shown to the table), plus
    pipeline and oracle rows on the same units, over two seeds."""
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.1)):
        for i in range(6):
            unit = {"domain": "d", "seed": seed, "unit": "case", "case_id": f"t{i}"}
            for strat, start, d in (("hue", 5, 0.40), ("random", 5, 0.90), ("hue", 1, 0.20)):
                rows.append({**unit, "family": "concept search", "strategy": strat, "start": start,
                             "method": f"concept, {strat}, start {start}, round 1", "labels_used": 10 if start == 5
                             else 6, "dice": d + shift})
            rows.append({**unit, "family": "training-free pipeline", "method": "pipeline, N=10", "labels_used": 10,
                         "dice": 0.5 + shift})
            rows.append({**unit, "family": "GT-box oracle", "method": "frozen decoder, GT box", "labels_used": 0,
                         "dice": 0.8})
    return pd.DataFrame(rows)


def test_matched_table_shows_every_strategy_and_chooses_none_on_test():
    from frozenseg.experiments import concept_report

    rows = _method_rows()
    t = concept_report.matched_table(rows).set_index("labels")
    assert not any("best" in c for c in t.columns), "no column picks a strategy by its test score"
    at10 = t.loc[10]
    cell = lambda m: ev.seed_cell(rows[rows.method == m])  # noqa: E731
    assert at10["concept search, random, start 5"] == cell("concept, random, start 5, round 1")
    assert at10["concept search, HUE top-k, start 5"] == cell("concept, hue, start 5, round 1") == "0.450 ± 0.071"
    assert at10["concept search, HUE top-k, start 1"] == "–" and t.loc[6]["concept search, HUE top-k, start 1"] != "–"
    assert at10["pipeline"] == cell("pipeline, N=10") and at10["tuned decoder + domain localizer"] == "–"
    comp = concept_report.comparison_table(rows).set_index("method")
    assert comp.loc["pipeline, N=10", "Dice"] == "0.550 ± 0.071", "sd across seeds with n - 1 (evaluation core)"


# ---------------------------------------------------------------- defaults: tokens started from the supports


def test_support_tokens_are_the_prompt_encoding_of_the_supports_mean_box_and_centroid(litemedsam):
    import torch

    cases = _phantom_support("isic", n=3)
    be = DecoderBackend(litemedsam)
    feats = be.features([c.image for c in cases])
    toks = be.support_tokens(feats, [c.mask for c in cases], 4)
    assert toks.shape == (4, be.dim) and torch.isfinite(toks).all()
    one = be.support_tokens(feats[:1], [cases[0].mask], 2)          # one support: exactly its box prompt
    from frozenseg.boxes import mask_to_box

    sparse, _ = litemedsam.prompt_embeddings(feats[0], boxes=mask_to_box(cases[0].mask))
    assert torch.allclose(one, sparse[0].float().cpu(), atol=1e-5)

