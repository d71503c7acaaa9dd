"""The localizer protocol: fit on a few labelled support cases, then locate the target in a new image."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..boxes import clip_box
from ..errors import ConfigError, DataError

OK = "ok"
NO_DETECTION = "no_detection"


@dataclass
class Localization:
    """A localizer's answer: a box (xyxy, original pixels) or None, a score, a flag and extras; optionally point
    prompts to decode with the box, or a mask the localizer made itself (the pipeline then skips the box decode)."""

    box: np.ndarray | None
    score: float = float("nan")
    flag: str = OK                      # "ok", "no_detection", or a recorded fallback such as "llm_malformed"
    extra: dict = field(default_factory=dict)
    points: np.ndarray | None = None    # (K, 2) xy, original pixels, decoded together with the box
    point_labels: np.ndarray | None = None   # (K,) 1 positive, 0 negative
    mask: np.ndarray | None = None      # (H, W) bool: the localizer's own mask (e.g. a concept or peer decoder)

    @property
    def found(self) -> bool:
        """True when there is a box."""
        return self.box is not None

    def record(self) -> dict:
        """Flat, JSON-friendly row for a results table (large arrays in ``extra`` are left out)."""
        row = {"flag": self.flag, "score": float(self.score)}
        row.update({f"box_{k}": (float(v) if self.box is not None else float("nan"))
                    for k, v in zip(("x0", "y0", "x1", "y1"), self.box if self.box is not None else [0] * 4)})
        row.update({k: v for k, v in self.extra.items() if isinstance(v, (str, int, float, bool))})
        return row


def no_detection(reason: str, **extra) -> Localization:
    """The answer of a localizer that found nothing (flagged, never a silent zero box)."""
    return Localization(box=None, score=float("nan"), flag=NO_DETECTION, extra={"reason": reason, **extra})


class Localizer:
    """Base class: ``fit(support_cases, support_embeddings)`` then ``locate(image, embedding)``."""

    name = "base"
    defaults: dict[str, Any] = {}
    needs_support = True                # False: GT-free, ``fit`` may be given no cases

    def __init__(self, model=None, **params):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ConfigError(f"{self.name}: unknown parameter(s) {unknown}; valid: {sorted(self.defaults)}")
        self.model = model
        self.params = {**self.defaults, **params}
        self.fitted = False

    def fit(self, support_cases: Sequence, support_embeddings: Sequence | None = None) -> "Localizer":
        """Learn from labelled support cases (their embeddings where the localizer uses features)."""
        if self.needs_support or support_cases:
            self._fit(*check_support(support_cases, support_embeddings, self.name))
        self.fitted = True
        return self

    def locate(self, image: np.ndarray, embedding=None) -> Localization:
        """Box of the target in ``image`` (None with flag 'no_detection' when nothing is found)."""
        if not self.fitted:
            raise ConfigError(f"{self.name}: call fit(support_cases, support_embeddings) before locate")
        return self._locate(image, embedding)

    def describe(self) -> dict:
        """Name and parameters, for provenance."""
        return {"localizer": self.name, **self.params}

    def _fit(self, cases: list, embeddings: list | None) -> None:
        """Subclass hook: learn from the checked support set."""

    def _locate(self, image: np.ndarray, embedding) -> Localization:
        """Subclass hook: locate in one image."""
        raise NotImplementedError


def check_support(cases: Sequence, embeddings: Sequence | None, who: str = "localizer") -> tuple[list, list | None]:
    """Support cases (and embeddings) whose masks are non-empty; a clear error when none remain."""
    cases = list(cases or [])
    if not cases:
        raise DataError(None, f"{who}: the support set is empty",
                        "pass N >= 1 labelled cases, e.g. subsample_train(data.train, 10, seed)")
    if embeddings is not None:
        embeddings = list(embeddings)
        if len(embeddings) != len(cases):
            raise ConfigError(f"{who}: {len(cases)} support cases but {len(embeddings)} embeddings")
    keep = [i for i, c in enumerate(cases) if np.asarray(c.mask).any()]
    if not keep:
        raise DataError(None, f"{who}: all {len(cases)} support masks are empty",
                        "a localizer learns from foreground; pick support cases that contain the target")
    return [cases[i] for i in keep], None if embeddings is None else [embeddings[i] for i in keep]


def component_box(binary: np.ndarray, select: str = "largest", weight: np.ndarray | None = None,
                  seed_yx: tuple[int, int] | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(box, component mask) of one connected component of ``binary``: largest, heaviest or the one at ``seed_yx``."""
    lab, n = ndimage.label(binary)
    if n == 0:
        return None, None
    if select == "seed" and seed_yx is not None and lab[seed_yx] > 0:
        k = int(lab[seed_yx])
    elif select == "heaviest" and weight is not None:
        k = int(np.argmax(ndimage.sum(weight, lab, index=np.arange(1, n + 1)))) + 1
    else:
        k = int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    comp = lab == k
    ys, xs = np.nonzero(comp)
    return clip_box(np.array([xs.min(), ys.min(), xs.max(), ys.max()], float), binary.shape), comp


def otsu(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of a 1-D array of values."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0 or v.max() == v.min():
        return float(v.max()) if v.size else float("nan")
    hist, edges = np.histogram(v, bins=bins)
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids) / np.maximum(w0, 1)
    m1 = (np.sum(hist * mids) - np.cumsum(hist * mids)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def grow_box(box: np.ndarray, margin: float, shape: tuple[int, int]) -> np.ndarray:
    """Grow a box by ``margin`` of its size on every side (negative shrinks), clipped to the image."""
    b = np.asarray(box, dtype=np.float64)
    w, h = b[2] - b[0] + 1, b[3] - b[1] + 1
    return clip_box(b + margin * np.array([-w, -h, w, h]), shape)
