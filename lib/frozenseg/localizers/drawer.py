"""Polygon/box drawer with three backends: a GT-free ``heuristic`` (offline default), an ``llm`` vision chat
endpoint whose every response is stored as a trace, and ``replay``, which reads those traces only.

LLM settings come from the environment: FROZENSEG_LLM_URL (an OpenAI-compatible base URL or a full
``.../chat/completions`` URL), FROZENSEG_LLM_KEY (optional for local servers) and FROZENSEG_LLM_MODEL.
A trace is keyed by sha256(image hash + prompt + model) and written atomically under
``cache_root()/traces``; the API key is never written.

A failed or malformed LLM answer raises :class:`LLMCallError` by default, so a dead endpoint is never reported as
the LLM drawer. ``fallback="heuristic"`` (or ``"no_box"``) opts in to a fallback instead: each one is flagged on its
localization ('llm_error' / 'llm_malformed'), counted (:meth:`DrawerLocalizer.fallback_note`), and more than
:data:`MAX_FALLBACK_SHARE` of the calls falling back (once :data:`MIN_CALLS_FOR_SHARE` calls were made) raises.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
from scipy import ndimage

from .. import paths
from ..cache import image_hash
from ..errors import ConfigError, DataError, FrozenSegError
from ..io import write_json_atomic
from .base import Localization, Localizer, grow_box, no_detection, otsu

BACKENDS = ("heuristic", "llm", "replay")
FALLBACKS = (None, "heuristic", "no_box")   # None: a failed or malformed LLM answer raises LLMCallError
MAX_FALLBACK_SHARE = 0.2    # with a fallback opted in: more than this share of the LLM calls falling back raises
MIN_CALLS_FOR_SHARE = 5     # ... once at least this many calls were made
ENV_URL, ENV_KEY, ENV_MODEL = "FROZENSEG_LLM_URL", "FROZENSEG_LLM_KEY", "FROZENSEG_LLM_MODEL"
PROMPT = ("This is a {width}x{height} pixel {modality} image. Outline the {target} with one polygon. "
          'Answer with JSON only, e.g. {{"polygon": [[x1, y1], [x2, y2], [x3, y3]]}}, in pixel coordinates '
          "(origin top-left, x to the right, y down), at most 32 points.")


class MissingTraceError(DataError):
    """Replay mode found no recorded trace for an image/prompt/model."""


class LLMCallError(FrozenSegError, RuntimeError):
    """The LLM drawer got no usable polygon (endpoint error or malformed reply) and no fallback was opted in, or
    too many of its calls fell back."""


# ----------------------------------------------------------------------------- heuristic backend

def border_saliency(image: np.ndarray, border: float, polarity: str) -> np.ndarray:
    """(H, W) distance of each pixel's colour from the image border's robust colour statistics."""
    img = image.astype(np.float32) / 255.0
    h, w = img.shape[:2]
    b = max(1, int(round(border * min(h, w))))
    ring = np.concatenate([img[:b].reshape(-1, 3), img[-b:].reshape(-1, 3),
                           img[:, :b].reshape(-1, 3), img[:, -b:].reshape(-1, 3)])
    med = np.median(ring, 0)
    mad = np.median(np.abs(ring - med), 0) * 1.4826 + 0.02
    if polarity == "any":
        return np.sqrt((((img - med) / mad) ** 2).mean(-1))
    lum = (img - med).mean(-1) / mad.mean()
    if polarity == "dark":
        return np.clip(-lum, 0, None)
    if polarity == "bright":
        return np.clip(lum, 0, None)
    raise ConfigError(f"unknown polarity {polarity!r}; choose 'any', 'dark' or 'bright'")


def pick_component(binary: np.ndarray, drop_border: bool, center_weight: float, min_area: float) -> np.ndarray | None:
    """The component with the best area x centrality score (border-touching ones dropped when others exist)."""
    lab, n = ndimage.label(binary)
    if n == 0:
        return None
    h, w = binary.shape
    idx = np.arange(1, n + 1)
    area = ndimage.sum(np.ones_like(lab), lab, idx)
    cy, cx = np.array(ndimage.center_of_mass(binary, lab, idx)).T
    dist = np.hypot((cy - (h - 1) / 2) / h, (cx - (w - 1) / 2) / w) / np.hypot(0.5, 0.5)
    score = area * (1 - center_weight * dist)
    score[area < min_area * h * w] = -np.inf
    if drop_border:
        edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        inner = np.setdiff1d(idx, edge)
        if inner.size and np.isfinite(score[inner - 1]).any():
            score[edge[edge > 0] - 1] = -np.inf
    if not np.isfinite(score).any():
        return None
    return lab == int(idx[int(np.argmax(score))])


def mask_polygon(mask: np.ndarray) -> np.ndarray:
    """Convex-hull polygon (K, 2) xy of a mask's pixels (a degenerate mask gives its bounding corners)."""
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    try:
        return pts[ConvexHull(pts).vertices]
    except (QhullError, ValueError):
        return np.array([[xs.min(), ys.min()], [xs.max(), ys.min()], [xs.max(), ys.max()], [xs.min(), ys.max()]], float)


def heuristic_polygon(image: np.ndarray, p: dict) -> tuple[np.ndarray | None, float]:
    """GT-free polygon of the most salient central blob (contrast vs the image border), and its saliency."""
    scale = min(image.shape[:2]) / 256
    size = int(round(p["hair"] * scale))
    if size > 1:                                   # grey closing removes thin dark lines (hair, folds)
        image = ndimage.grey_closing(image, size=(size, size, 1))
    sal = border_saliency(image, p["border"], p["polarity"])
    sigma = p["sigma"] * scale
    if sigma > 0:
        sal = ndimage.gaussian_filter(sal, sigma)
    t = otsu(sal) * p["thr_scale"]
    comp = pick_component(sal > t, p["drop_border"], p["center_weight"], p["min_area"])
    if comp is None:
        return None, float("nan")
    comp = ndimage.binary_fill_holes(comp)
    it = int(round(p["dilation"] * min(image.shape[:2]) / 256))
    if it > 0:
        comp = ndimage.binary_dilation(comp, iterations=it)
    elif it < 0:
        shrunk = ndimage.binary_erosion(comp, iterations=-it)
        comp = shrunk if shrunk.any() else comp
    return mask_polygon(comp), float(sal[comp].mean())


# ----------------------------------------------------------------------------- LLM backend and traces

def trace_key(img_hash: str, prompt: str, model: str) -> str:
    """sha256 of image hash + prompt + model: the name of one trace."""
    return hashlib.sha256(f"{img_hash}\n{prompt}\n{model}".encode()).hexdigest()


def trace_path(root: str | Path, key: str) -> Path:
    """Where the trace ``key`` lives under ``root``."""
    return Path(root) / key[:2] / f"{key}.json"


def load_trace(root: str | Path, key: str) -> dict | None:
    """A recorded trace, or None when absent."""
    path = trace_path(root, key)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"trace is not valid JSON ({exc})", "delete it and record it again") from exc


def png_base64(image: np.ndarray) -> str:
    """The image as a base64 PNG string."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def chat_url(url: str) -> str:
    """Full chat-completions URL from a base URL (left as is when it already names the route)."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def chat_body(image: np.ndarray, prompt: str, model: str) -> dict:
    """OpenAI-compatible vision chat request at temperature 0."""
    return {"model": model, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "text", "text": prompt},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png_base64(image)}"}}]}]}


def http_post(url: str, body: dict, key: str | None, timeout: float) -> dict:
    """POST JSON and return the decoded JSON reply (tests replace this function; no retries)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL comes from the user's env
        return json.loads(resp.read().decode("utf-8"))


def parse_polygon(content: str, shape: tuple[int, int]) -> np.ndarray:
    """(K, 2) polygon from reply text: JSON {"polygon": [[x, y], ...]}, code fences allowed; else ValueError."""
    text = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", str(content).strip())
    m = re.search(r"[\[{].*[\]}]", text, flags=re.S)
    if m is None:
        raise ValueError("no JSON object in the reply")
    obj = json.loads(m.group(0))
    pts = obj.get("polygon") if isinstance(obj, dict) else obj
    arr = np.asarray(pts, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 3 or not np.isfinite(arr).all():
        raise ValueError(f"polygon must be >= 3 finite [x, y] points, got shape {arr.shape}")
    h, w = shape
    arr[:, 0], arr[:, 1] = np.clip(arr[:, 0], 0, w - 1), np.clip(arr[:, 1], 0, h - 1)
    if np.ptp(arr[:, 0]) < 1 or np.ptp(arr[:, 1]) < 1:
        raise ValueError("polygon has no area inside the image")
    return arr


def reply_content(response: dict) -> str:
    """Text of the first choice of a chat-completions reply (ValueError when absent)."""
    try:
        return response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"reply has no choices[0].message.content ({exc!r})") from exc


# ----------------------------------------------------------------------------- the localizer

class DrawerLocalizer(Localizer):
    """Draws a polygon around the target (heuristic, llm or replay backend) and boxes it with a margin."""

    name = "drawer"
    needs_support = False
    defaults = {"backend": "heuristic", "margin": 0.02, "border": 0.08, "hair": 7, "sigma": 4.0, "polarity": "any",
                "thr_scale": 1.0, "dilation": 0.0, "drop_border": True, "center_weight": 0.5, "min_area": 0.002,
                "target": "main lesion or object", "modality": "medical", "prompt": None, "llm_model": None,
                "trace_dir": None, "fallback": None, "refresh": False, "timeout": 120.0}

    def __init__(self, model=None, **params):
        super().__init__(model, **params)
        if self.params["backend"] not in BACKENDS:
            raise ConfigError(f"unknown drawer backend {self.params['backend']!r}; choose one of {list(BACKENDS)}")
        if self.params["fallback"] not in FALLBACKS:
            raise ConfigError(f"drawer fallback {self.params['fallback']!r} is not one of {list(FALLBACKS)} (None: a "
                              "failed LLM call raises; 'heuristic': the heuristic drawer's box, flagged and counted; "
                              "'no_box': no box, flagged and counted)")
        self.check_settings()
        self.fitted = True                      # GT-free: usable without fit
        self.reset_counts()                     # LLM answers used (llm/replay backends) and how many fell back

    def check_settings(self) -> None:
        """ConfigError naming each missing LLM setting (llm: FROZENSEG_LLM_URL and a model name; replay: a model name)."""
        backend = self.params["backend"]
        if backend == "heuristic":
            return
        missing = [ENV_URL] if backend == "llm" and not os.environ.get(ENV_URL) else []
        if not (self.params["llm_model"] or os.environ.get(ENV_MODEL)):
            missing.append(ENV_MODEL)
        if missing:
            need = (f"{ENV_URL} (an OpenAI-compatible endpoint), {ENV_MODEL} and usually {ENV_KEY}" if backend == "llm"
                    else f"{ENV_MODEL} (or llm_model=...), the model the traces were recorded with")
            raise ConfigError(f"the drawer's {backend} backend needs {need}; not set: {', '.join(missing)}. "
                              "Use backend='replay' with recorded traces, or backend='heuristic' (the default) offline")

    @property
    def trace_root(self) -> Path:
        """Folder of the traces (``trace_dir`` or ``cache_root()/traces``)."""
        return Path(self.params["trace_dir"]) if self.params["trace_dir"] else paths.cache_root() / "traces"

    def prompt_for(self, image: np.ndarray) -> str:
        """The exact prompt sent for ``image`` (part of the trace key)."""
        tpl = self.params["prompt"] or PROMPT
        return tpl.format(width=image.shape[1], height=image.shape[0], target=self.params["target"],
                          modality=self.params["modality"])

    def llm_model(self) -> str:
        """Model name from the parameters or FROZENSEG_LLM_MODEL."""
        name = self.params["llm_model"] or os.environ.get(ENV_MODEL)
        if not name:
            raise ConfigError(f"the drawer's {self.params['backend']} backend needs a model name: set {ENV_MODEL} "
                              "or pass llm_model=...")
        return name

    def key_for(self, image: np.ndarray) -> str:
        """Trace key of ``image`` under the current prompt and model."""
        return trace_key(image_hash(image), self.prompt_for(image), self.llm_model())

    def _locate(self, image, embedding) -> Localization:
        """Dispatch to the backend."""
        if self.params["backend"] == "heuristic":
            return self._heuristic(image)
        return self._from_trace(self._trace(image), image)

    def _heuristic(self, image) -> Localization:
        """GT-free polygon -> box."""
        poly, score = heuristic_polygon(image, self.params)
        if poly is None:
            return no_detection("no salient component", backend="heuristic")
        return self._boxed(poly, image, score, "ok", {"backend": "heuristic"})

    def _boxed(self, poly, image, score, flag, extra) -> Localization:
        """Localization of a polygon: its bounding box grown by ``margin``."""
        box = np.array([poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max(), poly[:, 1].max()])
        box = grow_box(box, self.params["margin"], image.shape[:2])
        return Localization(box=box, score=score, flag=flag, extra={**extra, "polygon": poly.tolist()})

    def _trace(self, image) -> dict:
        """The trace for ``image``: recorded (replay, or llm with a stored reply) or fetched and stored (llm)."""
        model, prompt = self.llm_model(), self.prompt_for(image)
        key = trace_key(image_hash(image), prompt, model)
        trace = load_trace(self.trace_root, key)
        if self.params["backend"] == "replay":
            if trace is None:
                raise MissingTraceError(trace_path(self.trace_root, key),
                                        f"no recorded LLM trace {key} (model {model!r})",
                                        f"record it once with backend='llm' and {ENV_URL}/{ENV_KEY}/{ENV_MODEL} set, "
                                        "or point trace_dir at the folder that holds the recorded traces")
            return trace
        if trace is not None and trace.get("status") == "ok" and not self.params["refresh"]:
            return trace
        trace = self._call(image, prompt, model, key)
        write_json_atomic(trace_path(self.trace_root, key), trace)
        return trace

    def _call(self, image, prompt, model, key) -> dict:
        """One request to the endpoint; a failure comes back as an error trace (stored, then raised or fallen back)."""
        url = os.environ.get(ENV_URL)
        if not url:
            raise ConfigError(f"the drawer's llm backend needs {ENV_URL} (and {ENV_MODEL}, usually {ENV_KEY}); "
                              "use backend='replay' with recorded traces or backend='heuristic' offline")
        trace = {"key": key, "image_hash": image_hash(image), "prompt": prompt, "model": model,
                 "endpoint": chat_url(url), "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "temperature": 0}
        try:
            response = http_post(chat_url(url), chat_body(image, prompt, model), os.environ.get(ENV_KEY),
                                 float(self.params["timeout"]))
            trace.update(status="ok", response=response)
        except Exception as exc:  # noqa: BLE001 - any failure is recorded, then raised or fallen back on
            trace.update(status="error", error=f"{type(exc).__name__}: {exc}")
        return trace

    def _from_trace(self, trace: dict, image) -> Localization:
        """Polygon from a trace's reply; a failed call or malformed reply raises, or falls back when opted in."""
        base = {"backend": self.params["backend"], "trace_key": trace.get("key", "")}
        self.calls += 1
        if trace.get("status") != "ok":
            return self._fallback(image, "llm_error", trace.get("error", "unknown error"), trace)
        try:
            poly = parse_polygon(reply_content(trace["response"]), image.shape[:2])
        except (ValueError, json.JSONDecodeError) as exc:
            return self._fallback(image, "llm_malformed", str(exc), trace)
        self.check_share()
        return self._boxed(poly, image, float("nan"), "ok", base)

    def _fallback(self, image, flag: str, error: str, trace: dict) -> Localization:
        """The opted-in fallback, flagged with why and counted: the heuristic drawer's box (or none); without a
        fallback, LLMCallError."""
        if self.params["fallback"] is None:
            raise LLMCallError(self.failure_message(flag, error, trace))
        self.fallbacks += 1
        self.check_share()
        extra = {"backend": self.params["backend"], "trace_key": trace.get("key", ""), "error": error,
                 "fallback": self.params["fallback"]}
        if self.params["fallback"] == "heuristic":
            h = self._heuristic(image)
            if h.box is not None:
                return Localization(box=h.box, score=h.score, flag=flag, extra={**extra, "polygon": h.extra["polygon"]})
        return Localization(box=None, score=float("nan"), flag=flag, extra=extra)

    def failure_message(self, flag: str, error: str, trace: dict) -> str:
        """What went wrong with one LLM answer, the settings involved and the fix."""
        what = "the endpoint failed" if flag == "llm_error" else "the reply held no usable polygon"
        where = trace.get("endpoint") or os.environ.get(ENV_URL) or "(not set)"
        path = trace_path(self.trace_root, trace.get("key", "")) if trace.get("key") else None
        if self.params["backend"] == "replay":
            fix = (f"the recorded trace {path} holds a failed call: record it again with backend='llm' and "
                   f"{ENV_URL}/{ENV_KEY}/{ENV_MODEL} set")
        else:
            fix = (f"check {ENV_URL} (the endpoint, now {where}), {ENV_KEY} (its API key) and {ENV_MODEL} (a vision "
                   f"model it serves, now {trace.get('model')!r}), or use backend='replay' with recorded traces")
        return (f"the drawer's {self.params['backend']} backend got no polygon: {what} ({error}). Fix: {fix}; "
                "or pass fallback='heuristic' to use the heuristic drawer's box for failed calls (each is flagged "
                f"{flag!r} and counted)")

    def reset_counts(self) -> None:
        """Start counting calls and fallbacks afresh (e.g. after a fit, before the test images)."""
        self.calls, self.fallbacks = 0, 0

    def fallback_note(self) -> str:
        """How many LLM answers fell back, for a table: e.g. 'llm, 3 of 20 fell back' ('heuristic' for that backend)."""
        if self.params["backend"] == "heuristic":
            return "heuristic"
        return f"{self.params['backend']}, {self.fallbacks} of {self.calls} fell back"

    def check_share(self) -> None:
        """LLMCallError once more than MAX_FALLBACK_SHARE of at least MIN_CALLS_FOR_SHARE calls fell back."""
        if self.calls >= MIN_CALLS_FOR_SHARE and self.fallbacks > MAX_FALLBACK_SHARE * self.calls:
            raise LLMCallError(
                f"the drawer's {self.params['backend']} backend fell back on {self.fallbacks} of {self.calls} calls, "
                f"more than the allowed share {MAX_FALLBACK_SHARE:.0%} (drawer.MAX_FALLBACK_SHARE); its results "
                f"would mostly be the fallback's, not the LLM's. Fix: check {ENV_URL}, {ENV_KEY} and {ENV_MODEL} "
                "(the flagged localizations' 'error' says what the endpoint answered), or use backend='heuristic'")
