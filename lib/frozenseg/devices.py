"""Which device each loaded model's parameters are on: a light log for the rehearsal (``make rehearsal``).

Every loader of a frozen model or a trained network calls :func:`record` with a name and the torch module. When
``FROZENSEG_DEVICE_LOG`` names a folder, the process writes ``<folder>/<pid>.json`` there (at each record and again
at exit, so a module moved after loading is logged where it ended): one entry per model with the devices its
parameters are on. Without the variable nothing is written and nothing is kept.
"""
from __future__ import annotations

import atexit
import os
import sys
import weakref
from pathlib import Path

ENV = "FROZENSEG_DEVICE_LOG"
_LOADED: list[list] = []                 # [name, weak reference, the row last seen while it was alive]
_HOOKED = False


def record(name: str, module) -> None:
    """Note that ``module`` (a torch module, or an object with ``parameters()``) was loaded as ``name``."""
    global _HOOKED
    if not os.environ.get(ENV) or module is None:
        return
    try:
        ref = weakref.ref(module)
    except TypeError:                    # an object without weak references: keep it alive instead
        ref = (lambda m: (lambda: m))(module)
    _LOADED.append([str(name), ref, None])
    if not _HOOKED:
        atexit.register(dump)
        _HOOKED = True
    dump()


def devices_of(module) -> list[str]:
    """Sorted device names of a module's parameters and buffers ('cpu', 'cuda:0', ...)."""
    devs = {str(p.device) for p in module.parameters()}
    if hasattr(module, "buffers"):
        devs |= {str(b.device) for b in module.buffers()}
    return sorted(devs)


def snapshot() -> list[dict]:
    """One row per recorded model: name, parameter count, devices (now, or when last seen if it was freed since)."""
    rows = []
    for item in _LOADED:
        name, ref, last = item
        m = ref()
        if m is not None:
            item[2] = last = {"name": name, "type": type(m).__name__,
                              "n_params": sum(p.numel() for p in m.parameters()), "devices": devices_of(m),
                              "alive": True}
        elif last is not None:
            last = {**last, "alive": False}
        if last is not None:
            rows.append(last)
    return rows


def dump(folder: str | Path | None = None) -> Path | None:
    """Write this process's log to ``folder`` (default ``$FROZENSEG_DEVICE_LOG``); None when there is no folder."""
    folder = folder or os.environ.get(ENV)
    if not folder:
        return None
    from .io import write_json_atomic

    rec = {"pid": os.getpid(), "argv": sys.argv[:3], "wanted": os.environ.get("FROZENSEG_DEVICE") or "",
           "notebook": os.environ.get("FROZENSEG_NOTEBOOK", ""), "models": snapshot()}
    return write_json_atomic(Path(folder) / f"{os.getpid()}.json", rec)
