"""Inference engines for the frozen image encoder: OpenVINO Runtime on the CPU, eager PyTorch as the reference.

The encoder is the costliest frozen part. ``make bench`` (part ``encode``) counts its GFLOP per image and times
eager PyTorch and OpenVINO against the machine's float32 matmul speed, writing both to bench/bench.json (the
README's speed table; ``ENCODE_TARGETS`` in bench/encode.py are the fractions they must reach). The encoder is
exported once per model (``openvino.convert_model`` traces the torch module) and the IR is cached on disk by the
model's cache id (weights hash and preprocessing), the input shape and the OpenVINO version; each process then only
compiles the cached IR.

Choice (``FROZENSEG_ENCODER``): ``auto`` (default) = OpenVINO when the model runs on the CPU and OpenVINO imports,
else PyTorch; ``openvino`` insists (an error when it cannot run); ``torch`` = eager PyTorch. A failed export falls
back to PyTorch with a warning that says why, and ``model.encoder_engine`` says which engine encoded.

Precision: OpenVINO's CPU plugin runs bf16 by default where the CPU has it, which moves LiteMedSAM's embedding far
beyond ``PARITY_TOL``; the f32 precision hint is set explicitly, which keeps it within ``PARITY_TOL`` of PyTorch
(tests/test_engine.py asserts that on embeddings and decoded masks). Because of that parity the embedding cache key
does not depend on the engine: an embedding written by one engine is read by the other.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import paths
from ..errors import ConfigError
from ..io import current_umask

log = logging.getLogger(__name__)

ENGINES = ("auto", "openvino", "torch")
ENV = "FROZENSEG_ENCODER"
PARITY_TOL = 1e-4          # max |OpenVINO - PyTorch| on an embedding under which both share one cache key
OV_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
EXPORT_VERSION = "1"       # bump when the export recipe changes (a new IR is written, embeddings stay valid)


def requested_engine() -> str:
    """The engine asked for by ``FROZENSEG_ENCODER`` (default ``auto``); unknown values raise ConfigError."""
    name = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if name not in ENGINES:
        raise ConfigError(f"{ENV}={name!r} is not an encoder engine; use one of {list(ENGINES)}")
    return name


def openvino_version() -> str | None:
    """OpenVINO's version, or None when it is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return ov.get_version()


def planned_engine(device: str | torch.device = "cpu") -> str:
    """The engine ``auto`` resolves to on ``device`` before anything is exported ('openvino' or 'torch')."""
    name = requested_engine()
    if name != "auto":
        return name
    return "openvino" if torch.device(device).type == "cpu" and openvino_version() else "torch"


def export_dir() -> Path:
    """Where exported encoder IRs live: ``<cache root>/openvino``."""
    return paths.cache_root() / "openvino"


class OpenVINOEncoder:
    """A torch image encoder compiled by OpenVINO Runtime (f32): call it with a (1, 3, S, S) float tensor."""

    def __init__(self, compiled, xml: Path):
        self.compiled, self.xml = compiled, xml
        self.request = compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.request.infer({0: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})
        return torch.from_numpy(np.array(self.request.get_output_tensor(0).data, copy=True))

    @classmethod
    def build(cls, encoder: torch.nn.Module, cache_id: str, side: int, threads: int | None = None,
              root: Path | None = None) -> "OpenVINOEncoder":
        """Export ``encoder`` for (1, 3, side, side) inputs once (cached on disk), then compile it for the CPU."""
        import openvino as ov

        xml = export_ir(encoder, cache_id, side, root)
        core = ov.Core()
        config = {**OV_CONFIG, "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        return cls(core.compile_model(str(xml), "CPU", config), xml)


def ir_key(cache_id: str, side: int) -> str:
    """Name of an exported IR: model cache id, input side, OpenVINO version and export recipe."""
    blob = f"{cache_id}|{side}|{openvino_version()}|{EXPORT_VERSION}"
    return f"{cache_id}-{side}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def export_ir(encoder: torch.nn.Module, cache_id: str, side: int, root: Path | None = None) -> Path:
    """Path of the encoder's OpenVINO IR (``encoder.xml`` + ``.bin``), exported and written atomically if absent."""
    import openvino as ov

    folder = Path(root or export_dir()) / ir_key(cache_id, side)
    xml = folder / "encoder.xml"
    if xml.is_file() and (folder / "encoder.bin").is_file():
        return xml
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")          # tracer warnings about Python-side shape checks
            ovm = ov.convert_model(encoder.eval(), example_input=torch.zeros(1, 3, side, side),
                                   input=[(1, 3, side, side)])
        ov.save_model(ovm, str(tmp / "encoder.xml"), compress_to_fp16=False)
        os.chmod(tmp, 0o777 & ~current_umask())             # mkdtemp's 0700 -> what a plain mkdir would give
        try:
            os.replace(tmp, folder)                  # a folder rename is atomic: readers see all of it or nothing
        except OSError:
            if not xml.is_file():                    # not a lost race with another process: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


def make_encoder(model, name: str | None = None) -> tuple[object, str, str]:
    """(callable encoder, engine name, note) for a PromptableModel; ``name`` defaults to ``FROZENSEG_ENCODER``.

    OpenVINO when asked for (or ``auto`` on the CPU with OpenVINO installed); PyTorch otherwise, or when the export
    fails under ``auto`` (the note says why). ``openvino`` on a GPU model or without OpenVINO raises ConfigError.
    """
    name = requested_engine() if name is None else name
    if name not in ENGINES:
        raise ConfigError(f"unknown encoder engine {name!r}; use one of {list(ENGINES)}")
    on_cpu = model.device.type == "cpu"
    if name == "torch" or (name == "auto" and not on_cpu):
        return model.image_encoder, "torch", "" if name == "torch" else f"model on {model.device}"
    if openvino_version() is None:
        if name == "openvino":
            raise ConfigError(f"{ENV}=openvino but OpenVINO is not installed; pip install -e . (it is a pinned "
                              "dependency) or set FROZENSEG_ENCODER=torch")
        return model.image_encoder, "torch", "OpenVINO not installed"
    if not on_cpu:
        raise ConfigError(f"{ENV}=openvino runs on the CPU, but the model is on {model.device}; "
                          "set FROZENSEG_ENCODER=auto (PyTorch on a GPU)")
    try:
        return OpenVINOEncoder.build(model.image_encoder, model.cache_id, model.input_frame), "openvino", ""
    except Exception as exc:  # noqa: BLE001 - any export or compile failure falls back under auto
        if name == "openvino":
            raise
        note = f"OpenVINO export failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"
        warnings.warn(f"{model.key}: {note}; encoding with eager PyTorch instead", stacklevel=3)
        return model.image_encoder, "torch", note
