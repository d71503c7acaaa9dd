"""Localizers: dispatch, support checks, the feature-grid mapping, each localizer on easy phantoms, drawer traces."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from frozenseg.boxes import box_iou, clip_box, mask_to_box
from frozenseg.data.phantoms import make_phantom_case
from frozenseg.errors import ConfigError, DataError
from frozenseg.localizers import LOCALIZERS, FeatureGrid, Localization, make_localizer
from frozenseg.localizers import drawer as drawer_mod
from frozenseg.localizers.drawer import LLMCallError, MissingTraceError
from frozenseg.localizers.static_box import normalised_box
from frozenseg.models.base import Embedding

FIXTURE_TRACES = Path(__file__).parent / "fixtures" / "traces"


@pytest.fixture(scope="module")
def isic(litemedsam):
    """Five 128-px ISIC phantoms with embeddings: 3 support, 2 queries."""
    cases = [make_phantom_case("isic", i, 128, 0) for i in range(5)]
    return cases, [litemedsam.encode(c.image) for c in cases]


def fixture_image():
    """The deterministic image whose LLM reply is recorded in tests/fixtures/traces."""
    yy, xx = np.mgrid[:48, :64]
    img = np.full((48, 64, 3), 200, np.uint8)
    img[((yy - 24) / 10) ** 2 + ((xx - 30) / 15) ** 2 < 1] = (90, 60, 40)
    return img


def query_ious(loc, cases, embs):
    """Box IoU with the ground truth on each query (0 where nothing was found)."""
    out = []
    for c, e in zip(cases, embs):
        r = loc.locate(c.image, e)
        out.append(0.0 if r.box is None else box_iou(r.box, mask_to_box(c.mask)))
    return out


# ---------------------------------------------------------------- dispatch and support checks

def test_unknown_localizer_lists_names():
    with pytest.raises(ConfigError) as err:
        make_localizer("nope")
    for name in LOCALIZERS:
        assert name in str(err.value)


def test_unknown_parameter_is_named():
    with pytest.raises(ConfigError, match="bogus"):
        make_localizer("static_box", bogus=1)


def test_empty_support_and_empty_masks_raise():
    c = make_phantom_case("cxr", 0, 64, 0)
    with pytest.raises(DataError, match="empty"):
        make_localizer("static_box").fit([])
    blank = type(c)(case_id="blank", domain="cxr", image=c.image, mask=np.zeros_like(c.mask))
    with pytest.raises(DataError, match="support masks are empty"):
        make_localizer("static_box").fit([blank, blank])


def test_locate_before_fit_raises():
    with pytest.raises(ConfigError, match="fit"):
        make_localizer("static_box").locate(np.zeros((8, 8, 3), np.uint8))


# ---------------------------------------------------------------- feature grid

def test_feature_grid_round_trip(litemedsam):
    emb = Embedding(features=np.zeros((256, 64, 64), np.float32), original_size=(100, 160), input_size=(160, 256))
    g = FeatureGrid.of(litemedsam, emb)
    assert g.stride == 4 and g.shape == (40, 64)
    cells = np.array([[0, 0], [63, 39], [17, 5]])
    assert np.array_equal(g.pixel_to_cell(g.cell_to_pixel(cells)), cells)
    xy = np.array([[0.0, 0.0], [159.0, 99.0], [80.3, 41.7]])
    back = g.cell_to_pixel(g.pixel_to_cell(xy))
    assert np.all(np.abs(back - xy) <= g.stride / np.array(g.scale) / 2 + 1e-9)
    mask = np.zeros((100, 160), bool)
    mask[:, :80] = True
    pooled = g.pool(mask)
    assert pooled.shape == (40, 64) and abs(pooled.mean() - 0.5) < 0.02
    assert g.upsample(pooled).shape == (100, 160)


# ---------------------------------------------------------------- localizers on phantoms

def test_static_box_is_mean_of_normalised_boxes():
    cases = [make_phantom_case("cxr", i, s, 0) for i, s in ((0, 64), (1, 96), (2, 80))]
    loc = make_localizer("static_box").fit(cases)
    expect = np.mean([normalised_box(c.mask) for c in cases], 0)
    assert np.allclose(loc.box01, expect)
    r = loc.locate(np.zeros((50, 70, 3), np.uint8))
    assert r.flag == "ok" and np.allclose(r.box, expect * [69, 49, 69, 49])


def test_prototype_localizes_isic(litemedsam, isic):
    cases, embs = isic
    loc = make_localizer("prototype", model=litemedsam).fit(cases[:3], embs[:3])
    assert min(query_ious(loc, cases[3:], embs[3:])) > 0.1     # measured 0.23 / 0.14: weak with 3 supports


def test_cpg_localizes_and_selects_by_prior(litemedsam, isic):
    cases, embs = isic
    loc = make_localizer("cpg", model=litemedsam, features="sam").fit(cases[:3], embs[:3])
    assert np.mean(query_ious(loc, cases[3:], embs[3:])) > 0.3    # measured 0.58 / 0.27
    r = loc.locate(cases[3].image, embs[3])
    assert r.extra["prior"].shape == cases[3].mask.shape and r.extra["feature_space"] == "sam"


def test_route_runs_prior_guided_mask_selection(litemedsam, isic):
    """The Kvasir route's stage after the box: of the decoder's three masks, the one agreeing best with the prior."""
    from frozenseg.evaluation.metrics import dice
    from frozenseg.pipeline import Pipeline
    from frozenseg.pipeline.router import get_route

    cases, embs = isic
    route = replace(get_route("kvasir"), localizer={"name": "cpg", "features": "sam"})
    pipe = Pipeline(route, litemedsam).fit(cases[:3], embs[:3])
    frame = pipe.frame(cases[3].image, embs[3])
    trace = pipe.run(cases[3].image, embs[3], frame=frame)
    names = [s.name for s in trace.stages]
    assert names[:2] == ["localize", "prior_select"] and trace.stages[1].fired
    loc = frame.localization
    region = loc.extra["prior"] >= loc.extra["threshold"]
    box = np.asarray(pipe.localize(frame, loc)[1])
    multi = frame.decode_multi(box)
    best = max(multi, key=lambda c: dice(c.mask, region))
    assert np.array_equal(trace.stages[1].mask, best.mask)
    assert trace.stages[1].accepted == (not np.array_equal(best.mask, trace.stages[0].mask))


def test_amg_ranks_candidates(litemedsam, isic):
    cases, embs = isic
    loc = make_localizer("amg", model=litemedsam, features="sam").fit(cases[:3], embs[:3])
    r = loc.locate(cases[3].image, embs[3])                      # one query: 18 box prompts are the slow part
    assert box_iou(r.box, mask_to_box(cases[3].mask)) > 0.2      # measured 0.40
    assert r.extra["n_candidates"] >= 1 and r.extra["mask"].shape == cases[3].mask.shape


def test_heuristic_drawer_isic():
    cases = [make_phantom_case("isic", i, 256, 0) for i in (200, 201, 202, 203)]
    loc = make_localizer("drawer")
    ious = [box_iou(loc.locate(c.image).box, mask_to_box(c.mask)) for c in cases]
    assert np.mean(ious) > 0.6                                   # measured 0.84 over 16 such cases
    assert len(loc.locate(cases[0].image).extra["polygon"]) >= 3


def test_nothing_found_is_flagged_not_zero():
    r = make_localizer("drawer").locate(np.full((64, 64, 3), 128, np.uint8))
    assert r.box is None and r.flag == "no_detection" and not r.found


def test_dinov2_tiny_random_runs_through_cpg(isic):
    from transformers import Dinov2Config, Dinov2Model

    from frozenseg.localizers.features import Dinov2Features

    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       patch_size=14, image_size=56)
    torch.manual_seed(0)
    space = Dinov2Features(Dinov2Model(cfg), side=56)
    cases, _ = isic
    loc = make_localizer("cpg", features=space).fit(cases[:2])     # DINOv2 needs no SAM embedding
    r = loc.locate(cases[3].image)
    assert isinstance(r, Localization) and r.extra.get("feature_space") == "dinov2"
    assert r.box is not None and r.extra["prior"].shape == cases[3].mask.shape
    assert space.tokens(cases[3].image).shape == (32, 4, 4)


# ---------------------------------------------------------------- LLM drawer: traces, replay, fallbacks

@pytest.fixture
def llm_env(monkeypatch, tmp_path):
    """LLM settings in the environment and a private trace folder."""
    monkeypatch.setenv("FROZENSEG_LLM_URL", "http://localhost:9/v1")
    monkeypatch.setenv("FROZENSEG_LLM_KEY", "sk-test-secret")
    monkeypatch.setenv("FROZENSEG_LLM_MODEL", "mock-vlm")
    return tmp_path / "traces"


def reply(content):
    """A chat-completions reply with ``content``."""
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


def test_llm_records_trace_and_replay_reproduces(monkeypatch, llm_env):
    sent = []

    def fake_post(url, body, key, timeout):
        sent.append((url, body, key))
        return reply('{"polygon": [[10, 12], [40, 12], [40, 30], [10, 30]]}')

    monkeypatch.setattr(drawer_mod, "http_post", fake_post)
    img = fixture_image()
    live = make_localizer("drawer", backend="llm", trace_dir=str(llm_env), margin=0.0).locate(img)
    assert live.flag == "ok" and np.allclose(live.box, [10, 12, 40, 30])
    url, body, key = sent[0]
    assert url.endswith("/chat/completions") and body["temperature"] == 0
    assert body["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    files = list(llm_env.rglob("*.json"))
    assert len(files) == 1 and "sk-test-secret" not in files[0].read_text()
    assert json.loads(files[0].read_text())["key"] == live.extra["trace_key"] == files[0].stem

    monkeypatch.setattr(drawer_mod, "http_post", lambda *a, **k: pytest.fail("replay must not call the network"))
    again = make_localizer("drawer", backend="replay", trace_dir=str(llm_env), margin=0.0).locate(img)
    assert np.array_equal(again.box, live.box) and again.extra["polygon"] == live.extra["polygon"]


def test_replay_from_recorded_fixture(monkeypatch):
    monkeypatch.setattr(drawer_mod, "http_post", lambda *a, **k: pytest.fail("no network in replay"))
    loc = make_localizer("drawer", backend="replay", llm_model="fixture-vlm", trace_dir=str(FIXTURE_TRACES),
                         target="skin lesion", modality="dermoscopy", margin=0.0)
    r = loc.locate(fixture_image())
    assert r.flag == "ok" and np.allclose(r.box, [15, 14, 45, 34])


def test_missing_trace_names_key(tmp_path):
    loc = make_localizer("drawer", backend="replay", llm_model="fixture-vlm", trace_dir=str(tmp_path))
    key = loc.key_for(fixture_image())
    with pytest.raises(MissingTraceError) as err:
        loc.locate(fixture_image())
    assert key in str(err.value) and "backend='llm'" in str(err.value)


def failing_post(behaviour):
    """A fake endpoint that raises (behaviour 'fail') or answers prose instead of a polygon ('malformed')."""
    def fake_post(url, body, key, timeout):
        if behaviour == "fail":
            raise OSError("connection refused")
        return reply("The lesion is roughly in the middle.")
    return fake_post


@pytest.mark.parametrize("behaviour,flag", [("malformed", "llm_malformed"), ("fail", "llm_error")])
def test_bad_llm_reply_raises_by_default(monkeypatch, llm_env, behaviour, flag):
    monkeypatch.setattr(drawer_mod, "http_post", failing_post(behaviour))
    img = make_phantom_case("isic", 200, 128, 0).image
    loc = make_localizer("drawer", backend="llm", trace_dir=str(llm_env))
    with pytest.raises(LLMCallError) as err:
        loc.locate(img)
    msg = str(err.value)
    for want in ("FROZENSEG_LLM_URL", "FROZENSEG_LLM_KEY", "FROZENSEG_LLM_MODEL", "fallback='heuristic'",
                 "connection refused" if behaviour == "fail" else "no JSON"):
        assert want in msg
    assert "sk-test-secret" not in msg
    trace = json.loads(next(llm_env.rglob("*.json")).read_text())
    assert trace["status"] == ("error" if behaviour == "fail" else "ok"), "the failed answer is still recorded"
    replay = make_localizer("drawer", backend="replay", trace_dir=str(llm_env))
    with pytest.raises(LLMCallError, match="backend='llm'"):
        replay.locate(img)


def test_dead_endpoint_names_the_url_variable(monkeypatch, llm_env):
    import socket

    with socket.socket() as s:                       # a local port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FROZENSEG_LLM_URL", f"http://127.0.0.1:{port}/v1")
    loc = make_localizer("drawer", backend="llm", trace_dir=str(llm_env), timeout=5.0)
    with pytest.raises(LLMCallError, match="FROZENSEG_LLM_URL") as err:
        loc.locate(fixture_image())
    assert f"127.0.0.1:{port}" in str(err.value) and "Error" in str(err.value)


@pytest.mark.parametrize("behaviour,flag", [("malformed", "llm_malformed"), ("fail", "llm_error")])
def test_opted_in_fallback_is_flagged_and_counted(monkeypatch, llm_env, behaviour, flag):
    monkeypatch.setattr(drawer_mod, "http_post", failing_post(behaviour))
    img = make_phantom_case("isic", 200, 128, 0).image
    loc = make_localizer("drawer", backend="llm", trace_dir=str(llm_env), fallback="heuristic")
    r = loc.locate(img)
    assert r.flag == flag and r.box is not None and r.extra["fallback"] == "heuristic" and r.extra["error"]
    assert (loc.calls, loc.fallbacks) == (1, 1) and loc.fallback_note() == "llm, 1 of 1 fell back"
    assert r.record()["flag"] == flag and r.record()["fallback"] == "heuristic"
    none = make_localizer("drawer", backend="llm", trace_dir=str(llm_env), fallback="no_box")
    r = none.locate(img)
    assert r.box is None and r.flag == flag and none.fallbacks == 1
    with pytest.raises(ConfigError, match="no_box"):
        make_localizer("drawer", backend="llm", trace_dir=str(llm_env), fallback="none")


def test_fallback_share_above_the_maximum_raises(monkeypatch, llm_env):
    imgs = [make_phantom_case("isic", i, 96, 0).image for i in range(drawer_mod.MIN_CALLS_FOR_SHARE * 2)]
    bad = {id(imgs[0]), id(imgs[1])}                 # endpoint fails on two images, answers the others

    def fake_post(url, body, key, timeout):
        if current[0] in bad:
            raise OSError("HTTP Error 503")
        return reply('{"polygon": [[10, 12], [40, 12], [40, 30], [10, 30]]}')

    monkeypatch.setattr(drawer_mod, "http_post", fake_post)
    current = [None]
    loc = make_localizer("drawer", backend="llm", trace_dir=str(llm_env), fallback="heuristic")
    flags = []
    with pytest.raises(LLMCallError, match="MAX_FALLBACK_SHARE") as err:
        for img in imgs:
            current[0] = id(img)
            flags.append(loc.locate(img).flag)
    assert flags == ["llm_error", "llm_error", "ok", "ok"], "raised at the minimum number of calls, not before"
    assert (loc.fallbacks, loc.calls) == (2, drawer_mod.MIN_CALLS_FOR_SHARE)
    assert 2 / drawer_mod.MIN_CALLS_FOR_SHARE > drawer_mod.MAX_FALLBACK_SHARE and "2 of 5" in str(err.value)
    ok = make_localizer("drawer", backend="llm", trace_dir=str(llm_env), fallback="heuristic")
    for img in imgs[2:]:                              # replies now stored: no fallback, no error
        current[0] = id(img)
        assert ok.locate(img).flag == "ok"
    assert ok.fallback_note() == f"llm, 0 of {len(imgs) - 2} fell back"
    ok.reset_counts()
    assert ok.fallback_note() == "llm, 0 of 0 fell back"


def test_llm_without_settings_says_what_to_set(monkeypatch, tmp_path):
    for k in ("FROZENSEG_LLM_URL", "FROZENSEG_LLM_MODEL"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConfigError, match="FROZENSEG_LLM_MODEL"):
        make_localizer("drawer", backend="llm", trace_dir=str(tmp_path)).locate(fixture_image())


def test_amg_feature_ensemble_scores(litemedsam, isic):
    from transformers import Dinov2Config, Dinov2Model

    from frozenseg.localizers.amg import zscore
    from frozenseg.localizers.features import Dinov2Features

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=14)
    cases, embs = isic
    loc = make_localizer("amg", model=litemedsam, features=["sam", Dinov2Features(Dinov2Model(cfg), side=56)])
    loc.fit(cases[:3], embs[:3])
    q = cases[3]
    masks = np.stack([q.mask, ~q.mask, np.roll(q.mask, 30, axis=1)])
    sims = loc.similarities(q.image, embs[3], masks)              # candidates given, so no decoder calls
    assert sims.shape == (2, 3) and np.isfinite(sims).all()
    assert np.argmax(sims[0]) == 0                                # SAM features prefer the true lesion
    assert abs(zscore(sims[1]).mean()) < 1e-5 and abs(zscore(sims[1]).std() - 1) < 1e-4


# ---------------------------------------------------------------- the ISIC route with a chosen drawer backend

ISIC_TRACES = Path(__file__).parent / "fixtures" / "traces_isic_smoke"
FIXTURE_MODEL = "fixture-vlm"


def fake_llm_server(polygons: dict):
    """A local OpenAI-compatible chat endpoint answering each image (by hash) with ``polygons[hash]``."""
    import base64
    import io
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from PIL import Image

    from frozenseg.cache import image_hash

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            url = body["messages"][0]["content"][1]["image_url"]["url"]
            img = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
            content = json.dumps({"polygon": polygons[image_hash(img)]})
            out = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def gt_polygon(mask, max_points: int = 32) -> list:
    """What the fake LLM answers: the ground-truth mask's convex hull (at most ``max_points`` integer points)."""
    poly = drawer_mod.mask_polygon(mask)
    poly = poly[:: int(np.ceil(len(poly) / max_points))]
    return np.round(poly).astype(int).tolist()


def record_isic_traces(cases, trace_dir, monkeypatch) -> None:
    """Record one trace per case with the isic route's drawer (backend='llm') against the fake endpoint, over HTTP.

    This made tests/fixtures/traces_isic_smoke (the smoke profile's ISIC train and test phantoms).
    """
    from frozenseg.cache import image_hash
    from frozenseg.pipeline.router import get_route

    server = fake_llm_server({image_hash(c.image): gt_polygon(c.mask) for c in cases})
    try:
        monkeypatch.setenv("FROZENSEG_LLM_URL", f"http://127.0.0.1:{server.server_port}/v1")
        monkeypatch.setenv("FROZENSEG_LLM_MODEL", FIXTURE_MODEL)
        monkeypatch.delenv("FROZENSEG_LLM_KEY", raising=False)
        loc = {k: v for k, v in get_route("isic_drawer").localizer.items() if k != "name"}
        drawer = make_localizer("drawer", **{**loc, "backend": "llm", "trace_dir": str(trace_dir)})
        for c in cases:
            assert drawer.locate(c.image).flag == "ok"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def isic_smoke():
    """The smoke profile's ISIC study (phantoms only)."""
    from frozenseg.study import setup

    study = setup(profile="smoke", domains=["isic"], verbose=False)
    data = study.data("isic")
    return study, list(data.train) + list(data.test)


def test_recorded_isic_traces_are_what_the_llm_backend_records(isic_smoke, monkeypatch, tmp_path):
    _, cases = isic_smoke
    record_isic_traces(cases, tmp_path, monkeypatch)
    fresh = sorted(tmp_path.rglob("*.json"))
    assert [p.name for p in fresh] == sorted(p.name for p in ISIC_TRACES.rglob("*.json")), \
        "the fixture traces are stale: re-record them with record_isic_traces into tests/fixtures/traces_isic_smoke"
    for p in fresh:
        new, old = json.loads(p.read_text()), json.loads((ISIC_TRACES / p.parent.name / p.name).read_text())
        assert new["response"] == old["response"] and new["prompt"] == old["prompt"] and new["status"] == "ok"


def test_isic_route_replays_recorded_polygons(isic_smoke, litemedsam, monkeypatch):
    from frozenseg.localizers.base import grow_box
    from frozenseg.experiments.domain import fit_domain, run_domain, test_cases
    from frozenseg.pipeline.router import get_route, with_localizer

    monkeypatch.setattr(drawer_mod, "http_post", lambda *a, **k: pytest.fail("replay must not call the network"))
    monkeypatch.delenv("FROZENSEG_LLM_URL", raising=False)
    study, _ = isic_smoke
    route = with_localizer(get_route("isic_drawer"), backend="replay", trace_dir=str(ISIC_TRACES), llm_model=FIXTURE_MODEL)
    assert route.localizer["backend"] == "replay" and get_route("isic_drawer").localizer["backend"] == "heuristic"
    df, info = run_domain(study, "isic", 0, "test_replay", route=route)      # the notebook's path (run_section)
    assert info["route"].localizer["backend"] == "replay" and (df.flag == "").all()
    pipe, rec = fit_domain(study, "isic", 0, route=route)                     # the same fit, from the genome cache
    heuristic, _ = fit_domain(study, "isic", 0, route=get_route("isic_drawer"), genome=False)
    assert rec["cached"] and pipe.localizer.params["backend"] == "replay"
    cases = test_cases(study, "isic")
    embs = study.embeddings(cases)
    moved = 0
    for c, e in zip(cases, embs):
        trace = drawer_mod.load_trace(ISIC_TRACES, pipe.localizer.key_for(c.image))
        poly = drawer_mod.parse_polygon(drawer_mod.reply_content(trace["response"]), c.image.shape[:2])
        loc = pipe.localizer.locate(c.image, e)
        assert loc.flag == "ok" and loc.extra["backend"] == "replay" and np.array_equal(loc.extra["polygon"], poly)
        box = grow_box(np.array([*poly.min(0), *poly.max(0)]), pipe.localizer.params["margin"], c.image.shape[:2])
        assert np.allclose(loc.box, box)
        tr = pipe.run(c.image, e)
        deployed = clip_box(np.round(grow_box(box, float(pipe.params.get("box_margin", 0.0)), c.image.shape[:2])),
                            c.image.shape[:2])                              # the frame decodes whole-pixel boxes
        want = litemedsam.decode(e, boxes=deployed[None]).masks[0]
        assert want.any() and np.array_equal(tr.stages[0].mask, want), "the localize mask is the replayed polygon's box"
        assert np.array_equal(tr.final, info["masks"][c.case_id])
        moved += not np.allclose(heuristic.localizer.locate(c.image, e).box, loc.box)
    assert moved, "the replayed boxes should differ from the heuristic drawer's"


def test_drawer_backend_choice_is_checked_before_any_work(monkeypatch):
    from frozenseg.pipeline.router import get_route, with_localizer

    route = get_route("isic_drawer")
    assert with_localizer(route, backend=None) is route
    monkeypatch.delenv("FROZENSEG_LLM_URL", raising=False)
    monkeypatch.setenv("FROZENSEG_LLM_MODEL", "some-vlm")
    with pytest.raises(ConfigError, match="FROZENSEG_LLM_URL"):
        with_localizer(route, backend="llm")
    monkeypatch.delenv("FROZENSEG_LLM_MODEL")
    with pytest.raises(ConfigError, match="FROZENSEG_LLM_MODEL"):
        with_localizer(route, backend="replay")
    with pytest.raises(ConfigError, match="heuristic"):
        with_localizer(route, backend="gpt")


# ---------------------------------------------------------------- DINOv2: one extractor per process, on the device

def test_dinov2_is_loaded_once_per_process_for_every_fit_and_leave_one_out_pipeline(dinov2_weights_dir, isic,
                                                                                   litemedsam, monkeypatch):

    from transformers import Dinov2Model

    from frozenseg.pipeline import Pipeline, get_route
    from frozenseg.pipeline.genome import loo_pipelines

    loads, real = [], Dinov2Model.from_pretrained.__func__
    monkeypatch.setattr(Dinov2Model, "from_pretrained",
                        classmethod(lambda cls, *a, **k: loads.append(a) or real(cls, *a, **k)))
    monkeypatch.setenv("FROZENSEG_DEVICE", "cpu")
    cases, embs = isic
    a = make_localizer("cpg", model=litemedsam, features="dinov2").fit(cases[:2], embs[:2])
    b = make_localizer("cpg", model=litemedsam, features="auto").fit(cases[1:3], embs[1:3])
    route = replace(get_route("kvasir"), localizer={"name": "cpg", "features": "dinov2"})
    pipe = Pipeline(route, litemedsam).fit(cases[:3], embs[:3])
    pipes = loo_pipelines(pipe, cases[:3], cases[:3], embs[:3])
    assert len({id(p) for p in pipes}) == 3, "three leave-one-out pipelines were fitted"
    assert len(loads) == 1, f"DINOv2 read from disk {len(loads)} times for six fits; once per process"
    assert {id(x) for x in [a.space, b.space, pipe.localizer.space] + [p.localizer.space for p in pipes]} == \
        {id(a.space)} and a.space.name == "dinov2"


def test_dinov2_is_built_on_the_study_device(dinov2_weights_dir, monkeypatch):
    """FROZENSEG_DEVICE (models.default_device) places the feature extractor; 'meta' stands in for a GPU here."""
    from frozenseg.localizers.features import make_feature_space

    monkeypatch.setenv("FROZENSEG_DEVICE", "meta")
    space = make_feature_space("dinov2")
    assert {p.device.type for p in space.net.parameters()} == {"meta"}
    monkeypatch.setenv("FROZENSEG_DEVICE", "cpu")
    assert {p.device.type for p in make_feature_space("auto").net.parameters()} == {"cpu"}
