"""Sweeps on Dask distributed: resumable units run serially, on a local cluster or an existing one; results in order.

A sweep is a list of *units* (e.g. ``experiments.baselines.RunKey``) and a function that runs one unit resumably (reads a
finished unit back from disk, else computes and saves it atomically). :func:`run_units` runs ``fn(unit)``, or
``fn(study, unit)`` when a study is given, for every unit and returns the results in the order of the units. Where
it runs is chosen by ``scheduler`` or ``FROZENSEG_SCHEDULER``, never by code:

- ``serial``: in this process, one unit after another, no Dask at all.
- ``local`` or ``local:N``: a ``distributed.LocalCluster`` of N worker processes (default: as many as the machine's
  cores and memory hold, one task and ``cores // N`` torch threads each; one worker when a GPU is visible), started
  and closed by the call; :func:`connect` keeps one open across calls.
- ``tcp://host:8786`` (or another Dask address): an existing cluster; its workers need this package, the data and a
  shared file system for the run folders.

Unset, the default is ``local``, except that a sweep of fewer than two distinct units, or on a machine that holds
one worker (one core, under ``2 * WORKER_MEMORY_GIB`` of memory, or a GPU), runs serially: a cluster would only
add its start-up there. On a 2-core laptop two one-thread workers keep both cores busy (serially, a sweep's data
preparation and scoring leave one core idle); a cluster costs its start-up plus a torch import and a data load per
worker.

Workers rebuild the study from a :class:`StudySpec` once per process (:func:`worker_study`); no arrays are shipped.
A unit must seed itself (a worker runs many units, in any order), so the same seeds give the same table whatever
runs it. A worker that dies mid-unit has the unit rerun elsewhere (up to ``ALLOWED_FAILURES`` deaths on a local
cluster); a unit that raises fails the sweep at once with a :class:`UnitError` naming the unit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import ConfigError, FrozenSegError

SCHEDULER_ENV = "FROZENSEG_SCHEDULER"
DEFAULT_SCHEDULER = "local"
SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")   # Dask comm protocols accepted as scheduler addresses
CONNECT_TIMEOUT_S = 5            # an unreachable scheduler address fails after this long
WORKER_WAIT_S = 60               # an existing cluster without workers fails after this long
ALLOWED_FAILURES = 3             # worker deaths one unit may cause before the sweep fails (Dask's default)
WORKER_MEMORY_GIB = 4            # memory one local worker is planned with (a study's data and model)
PINNED_ENV = ("FROZENSEG_OUT", "FROZENSEG_CACHE", "FROZENSEG_DATA", "MPLBACKEND")   # plus every other FROZENSEG_*
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class UnitError(FrozenSegError, RuntimeError):
    """One unit of a sweep failed; ``unit`` is the unit, ``__cause__`` the original exception."""

    def __init__(self, desc: str, unit: Any, cause: BaseException):
        self.unit, self.cause = unit, cause
        super().__init__(f"{desc}: unit {unit!r} failed with {type(cause).__name__}: {cause}. Fix it and rerun; "
                         "finished units are read back, not recomputed")


# ---------------------------------------------------------------- the study, rebuilt on workers


@dataclass(frozen=True)
class StudySpec:
    """What a worker needs to rebuild a Study with ``setup`` (no arrays): picklable and a few hundred bytes."""

    profile: str
    seeds: tuple[int, ...]
    domains: tuple[str, ...]
    source: str
    model: str
    folders: tuple[tuple[str, str], ...] = ()
    data_root: str | None = None                   # resolved FROZENSEG_DATA; None: the worker's own default
    overrides: tuple[tuple[str, Any], ...] = ()    # Profile fields that differ from the registered profile

    @classmethod
    def of(cls, study) -> StudySpec:
        """The spec of a Study built by ``setup`` (its profile may differ from the registered one in some fields)."""
        from .config import PROFILES

        prof = study.profile
        if prof.name not in PROFILES:
            raise ConfigError(f"profile {prof.name!r} is not in frozenseg.config.PROFILES, so workers cannot rebuild "
                              f"the study; register it there or run with {SCHEDULER_ENV}=serial")
        base = PROFILES[prof.name]
        overrides = tuple((f.name, getattr(prof, f.name)) for f in dataclasses.fields(prof)
                          if getattr(prof, f.name) != getattr(base, f.name))
        root = os.environ.get("FROZENSEG_DATA")
        return cls(profile=prof.name, seeds=tuple(int(s) for s in study.seeds), domains=tuple(study.domains),
                   source=study.source, model=study.model_key, folders=tuple(sorted(study.folders.items())),
                   data_root=str(Path(root).expanduser().resolve()) if root else None, overrides=overrides)

    @property
    def key(self) -> str:
        """A stable text key of this spec (its fields as sorted JSON)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=repr)

    def build(self):
        """A fresh Study from this spec (``setup(..., verbose=False)``, then the profile overrides)."""
        from .study import setup

        study = setup(self.profile, seeds=list(self.seeds), domains=list(self.domains), source=self.source,
                      model=self.model, data_root=self.data_root, folders=dict(self.folders), verbose=False)
        if self.overrides:
            study.profile = dataclasses.replace(study.profile, **dict(self.overrides))
        return study


_STUDIES: dict[str, Any] = {}
_STUDIES_LOCK = threading.Lock()


def worker_study(spec: StudySpec):
    """The Study of ``spec``, built once per process and reused by every unit (data and model load lazily)."""
    with _STUDIES_LOCK:
        if spec.key not in _STUDIES:
            _STUDIES[spec.key] = spec.build()
        return _STUDIES[spec.key]


# ---------------------------------------------------------------- choosing and starting a scheduler


@dataclass(frozen=True)
class Scheduler:
    """A parsed scheduler setting: kind 'serial', 'local' or 'address', plus where it came from."""

    kind: str
    address: str | None = None
    n_workers: int | None = None
    origin: str = "argument"


def resolve_scheduler(scheduler: str | None = None) -> Scheduler:
    """Parse ``scheduler``, else ``FROZENSEG_SCHEDULER``, else DEFAULT_SCHEDULER; inside a Dask worker, 'serial'."""
    if scheduler is None and _in_worker():
        return Scheduler("serial", origin="inside a Dask worker")
    origin = "argument"
    if scheduler is None:
        scheduler, origin = os.environ.get(SCHEDULER_ENV, "").strip(), SCHEDULER_ENV
        if not scheduler:
            scheduler, origin = DEFAULT_SCHEDULER, "default"
    text = str(scheduler).strip()
    if text == "serial":
        return Scheduler("serial", origin=origin)
    m = re.fullmatch(r"local(?::(\d+))?", text)
    if m:
        n = int(m.group(1)) if m.group(1) else None
        if n == 0:
            raise ConfigError(f"scheduler {text!r} ({origin}) asks for 0 workers; use local:1 or more")
        return Scheduler("local", n_workers=n, origin=origin)
    m = re.fullmatch(r"([a-z]+)://\S+", text)
    if m and m.group(1) in SCHEMES:
        return Scheduler("address", address=text, origin=origin)
    raise ConfigError(f"unknown scheduler {text!r} ({origin}); use 'serial', 'local', 'local:N' (N worker "
                      f"processes) or a Dask scheduler address such as tcp://host:8786 (schemes: {', '.join(SCHEMES)})")


def _is_client(obj) -> bool:
    """True for a ``distributed.Client`` (without importing distributed when nothing could be one)."""
    return "distributed" in sys.modules and isinstance(obj, sys.modules["distributed"].Client)


def _in_worker() -> bool:
    """True inside a Dask worker's task (a nested sweep then runs serially there)."""
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def usable_cores() -> int:
    """CPU cores this process may use: its share under a parallel runner (FROZENSEG_THREADS), else its affinity
    mask, else os.cpu_count()."""
    share = os.environ.get("FROZENSEG_THREADS", "")
    if share.isdigit() and int(share) > 0:
        return int(share)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Local worker processes the machine holds: one per core within WORKER_MEMORY_GIB each; one with a GPU."""
    import psutil

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return 1    # every worker would share cuda:0; use a dask-cuda cluster (one worker per GPU) via the address
    by_memory = psutil.virtual_memory().total // (WORKER_MEMORY_GIB * 2 ** 30)
    return max(1, min(usable_cores(), int(by_memory)))


def worker_environment(torch_threads: int) -> dict[str, str]:
    """Variables every local worker gets: the caller's FROZENSEG_* and MPLBACKEND, and the thread counts."""
    env = {k: v for k, v in os.environ.items() if k.startswith("FROZENSEG_") or k in PINNED_ENV}
    env.pop(SCHEDULER_ENV, None)
    return {**env, **{k: str(torch_threads) for k in THREAD_ENV}}


def start_local_cluster(n_workers: int | None = None):
    """A LocalCluster of ``n_workers`` single-task processes, each with ``cores // n_workers`` torch threads."""
    import dask
    from distributed import LocalCluster

    n = int(n_workers or default_workers())
    threads = max(1, usable_cores() // n)
    env = worker_environment(threads)
    # Dask's own pre-spawn variables are replaced: thread counts are the worker's share, not 1, and malloc is
    # left to frozenseg.models.keep_freed_memory (MALLOC_TRIM_THRESHOLD_=65536 slows training several-fold).
    config = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
              "distributed.nanny.pre-spawn-environ": {k: threads for k in THREAD_ENV}}
    with dask.config.set(config):
        return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, env=env, dashboard_address=":0",
                            silence_logs=logging.ERROR)


def _nanny_environ(cluster) -> dict[str, str]:
    """Variables the cluster's Nannies write into this process at every (re)start of a worker (OMP_NUM_THREADS...)."""
    written = {}
    for nanny in cluster.workers.values():
        written.update(getattr(nanny, "pre_spawn_env", {}))
    return written


def _undo_nanny_environ(written: dict, before: dict) -> None:
    """Put back this process's variables that Nannies overwrote; a value set differently since is left alone."""
    for k, v in written.items():
        if os.environ.get(k) == v != before.get(k):
            if before.get(k) is None:
                del os.environ[k]
            else:
                os.environ[k] = before[k]


@contextlib.contextmanager
def connect(scheduler=None, *, n_workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` for a scheduler setting (None for 'serial'); a local cluster it starts closes on exit.

    ``scheduler`` as in :func:`run_units`; a Client passed in is yielded as is and left open.
    """
    if _is_client(scheduler):
        yield scheduler
        return
    sched = scheduler if isinstance(scheduler, Scheduler) else resolve_scheduler(scheduler)
    if sched.kind == "serial":
        yield None
    elif sched.kind == "local":
        from distributed import Client

        before = dict(os.environ)
        cluster = start_local_cluster(n_workers or sched.n_workers)
        written = _nanny_environ(cluster)
        _undo_nanny_environ(written, before)
        try:
            with Client(cluster, set_as_default=False) as client:
                yield client
        finally:
            cluster.close()
            _undo_nanny_environ(written, before)     # a worker restarted mid-sweep wrote them again
    else:
        with _remote_client(sched) as client:
            yield client


@contextlib.contextmanager
def _remote_client(sched: Scheduler) -> Iterator[Any]:
    """A client of an existing cluster, with errors naming the address and FROZENSEG_SCHEDULER when unreachable."""
    from distributed import Client

    hint = (f"start it (dask scheduler / dask worker {sched.address}), fix {SCHEDULER_ENV}, or set "
            f"{SCHEDULER_ENV}=local (a cluster on this machine) or serial")
    try:
        client = Client(sched.address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {sched.address} (from {sched.origin}) within "
                          f"{CONNECT_TIMEOUT_S} s: {exc}; {hint}") from exc
    try:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError as exc:
            raise ConfigError(f"the Dask scheduler at {sched.address} (from {sched.origin}) has had no workers for "
                              f"{WORKER_WAIT_S} s; {hint}") from exc
        check_worker_environment(client)
        yield client
    finally:
        client.close()


def check_worker_environment(client) -> dict:
    """Warn when workers' FROZENSEG_OUT/CACHE/DATA or MPLBACKEND differ from this process's; returns the differences."""
    mine = {k: os.environ.get(k) for k in PINNED_ENV}
    differ = {}
    for worker, env in client.run(_pinned_environment).items():
        diff = {k: env.get(k) for k in PINNED_ENV if env.get(k) != mine[k]}
        if diff:
            differ[worker] = diff
    if differ:
        warnings.warn(f"Dask workers see other output/cache/data settings than this process ({mine}): {differ}; "
                      "their run folders land where they point", RuntimeWarning, stacklevel=3)
    return differ


def _pinned_environment() -> dict:
    """This process's values of PINNED_ENV (run on workers)."""
    return {k: os.environ.get(k) for k in PINNED_ENV}


# ---------------------------------------------------------------- running units


def task_key(desc: str, fn: Callable, spec: StudySpec | None, unit: Any) -> str:
    """Deterministic Dask key of one unit, e.g. 'trained_baselines-3f2a...': same (desc, fn, spec, unit), same key."""
    from dask.base import tokenize
    from dask.tokenize import TokenizationError

    prefix = re.sub(r"[^A-Za-z0-9_]+", "_", desc).strip("_") or "unit"
    try:
        what = tokenize(unit, ensure_deterministic=True)
    except TokenizationError as exc:
        raise ConfigError(f"unit {unit!r} cannot be hashed deterministically ({exc}); make units frozen "
                          "dataclasses, tuples, strings or numbers") from exc
    try:
        how = tokenize(fn, spec, ensure_deterministic=True)
    except TokenizationError:      # e.g. a closure over an unpicklable object: its name still separates sweeps
        how = tokenize(getattr(fn, "__qualname__", type(fn).__qualname__), spec)
    return f"{prefix}-{tokenize(what, how)}"


def task_threads() -> int:
    """Torch threads for a task on this worker: OMP_NUM_THREADS, else usable cores over the worker's task slots."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    from distributed import get_worker

    return max(1, usable_cores() // get_worker().state.nthreads)


def prepare_process() -> int:
    """Before each task on a worker: torch threads to the worker's share and freed memory kept; returns the threads.

    Per task, not per worker: loading a model (``Study.model``) resets torch to every core of the machine.
    """
    import torch

    from .models import keep_freed_memory

    keep_freed_memory()      # Dask's MALLOC_TRIM_THRESHOLD_ would make training page-fault 15x as often
    n = task_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def run_task(fn: Callable, spec: StudySpec | None, unit: Any):
    """One unit on a worker: :func:`prepare_process`, then ``fn(unit)`` or ``fn(study, unit)``."""
    prepare_process()
    return fn(unit) if spec is None else fn(worker_study(spec), unit)


def run_units(fn: Callable, units: Sequence, study=None, *, scheduler=None, n_workers: int | None = None,
              desc: str = "units", progress: bool = True) -> list:
    """``fn(unit)`` (or ``fn(study, unit)``) for every unit, serially or on Dask; results in the order of ``units``.

    ``study``: a Study (used as is when serial, rebuilt from its StudySpec on workers), a StudySpec, or None.
    ``scheduler``: 'serial', 'local', 'local:N', a Dask address, a ``distributed.Client``, or None for
    ``FROZENSEG_SCHEDULER`` (default DEFAULT_SCHEDULER). A failing unit raises :class:`UnitError` naming it.
    """
    units = list(units)
    sched = scheduler if _is_client(scheduler) else resolve_scheduler(scheduler)
    if getattr(sched, "origin", None) == "default" and (len(set(map(repr, units))) < 2 or default_workers() < 2):
        sched = Scheduler("serial", origin="default")     # a cluster would only add its start-up
    if not units or getattr(sched, "kind", None) == "serial":
        return _run_serial(fn, units, study, desc, progress)
    spec = StudySpec.of(study) if study is not None and not isinstance(study, StudySpec) else study
    with connect(sched, n_workers=n_workers) as client:
        return _run_on(client, fn, units, spec, desc, progress)


def _run_serial(fn: Callable, units: list, study, desc: str, progress: bool) -> list:
    """Every unit in this process, in order."""
    from tqdm.auto import tqdm

    if not units:
        return []
    if isinstance(study, StudySpec):
        study = worker_study(study)
    out = []
    with tqdm(units, desc=desc, disable=not progress) as bar:
        for unit in bar:
            try:
                out.append(fn(unit) if study is None else fn(study, unit))
            except Exception as exc:
                raise UnitError(desc, unit, exc) from exc
    return out


def _run_on(client, fn: Callable, units: list, spec: StudySpec | None, desc: str, progress: bool) -> list:
    """Every unit as one Dask task with a deterministic key; fail fast on the first failing unit."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    keys = [task_key(desc, fn, spec, u) for u in units]
    unit_of = dict(zip(keys, units))                 # a repeated unit is one task (same key)
    futures = {k: client.submit(run_task, fn, spec, unit_of[k], key=k, pure=False, retries=0) for k in unit_of}
    results: dict[str, Any] = {}
    try:
        with tqdm(total=len(futures), desc=desc, disable=not progress) as bar:
            for fut in as_completed(list(futures.values()), loop=client.loop):
                try:
                    results[fut.key] = fut.result()
                except Exception as exc:
                    raise UnitError(desc, unit_of[fut.key], exc) from exc
                bar.update()
    finally:
        client.cancel(list(futures.values()))      # nothing left queued on failure; forgotten results on success
    return [results[k] for k in keys]
