"""On-disk embedding cache keyed by model, weights, preprocessing, device type and dtype (``cache_id``) and image
content; atomic writes."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from . import paths
from .io import atomic_path
from .models.base import Embedding, PromptableModel

log = logging.getLogger(__name__)


def image_hash(image: np.ndarray) -> str:
    """sha256 of an image's shape, dtype and pixels."""
    h = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def case_key(case) -> list:
    """A labelled case's identity in a cache key: id, image size, and short content hashes of image and mask (the
    same ids at another size, or relabelled, are another case)."""
    return [case.case_id, list(case.image.shape[:2]), image_hash(case.image)[:16],
            image_hash(np.asarray(case.mask))[:16]]


class EmbeddingCache:
    """Embeddings stored as ``<root>/<model cache id>/<hh>/<hash>.npz``; shared by every notebook and profile."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else paths.cache_root() / "embeddings"
        self.hits = self.misses = 0

    def path(self, model: PromptableModel, image: np.ndarray) -> Path:
        """Where the embedding of ``image`` under ``model`` lives."""
        key = image_hash(image)
        return self.root / model.cache_id / key[:2] / f"{key}.npz"

    def load(self, path: Path) -> Embedding | None:
        """Read one entry; a corrupt entry is removed and treated as a miss."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                emb = Embedding(features=z["features"], original_size=tuple(int(v) for v in z["original_size"]),
                                input_size=tuple(int(v) for v in z["input_size"]))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a miss
            log.warning("embedding cache entry %s is unreadable (%s); re-encoding", path, exc)
            path.unlink(missing_ok=True)
            return None
        return emb

    def save(self, path: Path, emb: Embedding) -> None:
        """Write one entry atomically (temp file, fsync, rename)."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, features=emb.features.astype(np.float32),
                         original_size=np.asarray(emb.original_size), input_size=np.asarray(emb.input_size))

    def get(self, model: PromptableModel, image: np.ndarray) -> Embedding:
        """The embedding of ``image``: from disk if present, else encoded once and stored."""
        path = self.path(model, image)
        emb = self.load(path)
        if emb is not None:
            self.hits += 1
            return emb
        self.misses += 1
        emb = model.encode(image)
        self.save(path, emb)
        return emb

    def get_many(self, model: PromptableModel, images: Sequence[np.ndarray] | Iterable[np.ndarray],
                 desc: str = "encoding", progress: bool = True) -> list[Embedding]:
        """Embeddings of many images with a progress bar over those that need encoding."""
        images = list(images)
        todo = {i for i, im in enumerate(images) if not self.path(model, im).is_file()}
        out: list[Embedding | None] = [None] * len(images)
        bar = tqdm(total=len(todo), desc=f"{desc} ({model.key})", unit="img", disable=not progress or not todo)
        for i, im in enumerate(images):
            out[i] = self.get(model, im)
            if i in todo:
                bar.update(1)
        bar.close()
        return out  # type: ignore[return-value]


class MaskCache:
    """Masks and predicted IoU of deterministic box prompts, ``<root>/<model cache id>/<hh>/<key>.npz``.

    Decoding is deterministic given the embedding and the prompt, so a rebuild with a warm cache reads
    the bit-packed masks (8 KB for a 256x256 mask) instead of running the decoder again. Cold and warm
    runs return the same arrays, so tables do not depend on the cache's state.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else paths.cache_root() / "masks"
        self.hits = self.misses = 0

    def path(self, model: PromptableModel, image: np.ndarray, boxes: np.ndarray, multimask: bool) -> Path:
        """Where the decoded masks of ``boxes`` on ``image`` live."""
        h = hashlib.sha256(image_hash(image).encode())
        h.update(np.ascontiguousarray(boxes, dtype=np.float64).tobytes())
        h.update(b"multi" if multimask else b"single")
        key = h.hexdigest()
        return self.root / model.cache_id / key[:2] / f"{key}.npz"

    def decode_boxes(self, model: PromptableModel, image: np.ndarray, emb: Embedding, boxes,
                     multimask: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(masks (B, H, W) bool, predicted IoU (B,)) of box prompts, from disk when decoded before."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        path = self.path(model, image, boxes, multimask)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    shape = tuple(int(v) for v in z["shape"])
                    masks = np.unpackbits(z["bits"], count=int(np.prod(shape))).reshape(shape).astype(bool)
                    self.hits += 1
                    return masks, z["iou"]
            except Exception as exc:  # noqa: BLE001 - any unreadable file is a miss
                log.warning("mask cache entry %s is unreadable (%s); decoding again", path, exc)
                path.unlink(missing_ok=True)
        self.misses += 1
        pred = model.decode(emb, boxes=boxes, multimask=multimask)
        masks, iou = pred.masks, pred.iou.astype(np.float32)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, bits=np.packbits(masks.reshape(-1)), shape=np.asarray(masks.shape), iou=iou)
        return masks, iou
