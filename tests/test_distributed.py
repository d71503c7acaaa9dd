"""frozenseg.distributed on a 2-worker local cluster: the serial table in any order, a killed worker loses and
duplicates nothing, a failing unit is named, workers see the caller's settings, bad scheduler settings are clear."""
import dataclasses
import functools
import json
import os
import random
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from frozenseg import distributed as fd
from frozenseg.errors import ConfigError
from frozenseg.io import write_json_atomic

N_UNITS = 12


def toy_unit(unit: int, folder: str, seed: int = 0, sleep: float = 0.0) -> dict:
    """Resumable toy unit: its saved result when there is one, else a seeded number saved atomically.

    Each start appends this process's pid to ``attempts/<unit>``; a ``fail_<unit>`` file makes the unit raise.
    """
    root = Path(folder)
    done = root / "results" / f"{unit:03d}.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    (root / "attempts").mkdir(parents=True, exist_ok=True)
    with open(root / "attempts" / f"{unit:03d}", "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()}\n")
    if (root / f"fail_{unit:03d}").exists():
        raise ValueError(f"toy failure in unit {unit}")
    time.sleep(sleep)
    row = {"unit": unit, "value": float(np.random.default_rng([seed, unit]).random())}
    write_json_atomic(done, row)
    return row


def study_unit(study, unit: int) -> dict:
    """What a worker's rebuilt study looks like, and which process and Study object served the unit."""
    return {"unit": unit, "profile": study.profile.name, "n_test": study.profile.n_test, "seeds": list(study.seeds),
            "domains": list(study.domains), "pid": os.getpid(), "study": id(study)}


def pid_unit(unit: int) -> int:
    """The process that ran the unit."""
    return os.getpid()


def torch_threads_unit(unit: int) -> int:
    """Torch's thread count inside a task."""
    import torch

    return torch.get_num_threads()


def table(rows) -> pd.DataFrame:
    """Rows as a table sorted by unit."""
    return pd.DataFrame(rows).sort_values("unit").reset_index(drop=True)


def attempts(folder: Path, unit: int) -> list[int]:
    """Pids that started ``unit``, in order."""
    f = folder / "attempts" / f"{unit:03d}"
    return [int(x) for x in f.read_text().split()] if f.is_file() else []


@pytest.fixture(scope="module")
def cluster():
    """One 2-worker local cluster for the module, and this process's environment before it started."""
    before = dict(os.environ)
    with fd.connect("local", n_workers=2) as client:
        yield SimpleNamespace(client=client, environ_before=before)


# ----------------------------------------------------------------------------- same table wherever it runs


def test_serial_local_and_shuffled_give_identical_tables(cluster, tmp_path, monkeypatch):
    units = list(range(N_UNITS))
    serial = fd.run_units(functools.partial(toy_unit, folder=str(tmp_path / "serial")), units, scheduler="serial",
                          progress=False)
    monkeypatch.setenv(fd.SCHEDULER_ENV, "local:2")            # no code change: the variable picks the cluster
    local = fd.run_units(functools.partial(toy_unit, folder=str(tmp_path / "local")), units, progress=False)
    shuffled = random.Random(1).sample(units, len(units))
    fn = functools.partial(toy_unit, folder=str(tmp_path / "shuffled"))
    out = fd.run_units(fn, shuffled, scheduler=cluster.client, desc="shuffled", progress=True)
    assert [r["unit"] for r in serial] == units and [r["unit"] for r in out] == shuffled   # results in input order
    pd.testing.assert_frame_equal(table(local), table(serial))
    pd.testing.assert_frame_equal(table(out), table(serial))
    again = fd.run_units(fn, units + units[:3], scheduler=cluster.client, progress=False)   # read back, repeats ok
    pd.testing.assert_frame_equal(table(again[:N_UNITS]), table(serial))
    assert again[N_UNITS:] == again[:3]
    assert all(len(attempts(tmp_path / "shuffled", u)) == 1 for u in units)   # finished units were not rerun


def test_workers_rebuild_the_study_once_per_process(cluster, monkeypatch):
    from frozenseg.study import setup

    monkeypatch.delenv("PYTHONHASHSEED", raising=False)         # setup's seed_everything sets it; restored after
    study = setup("smoke", seeds=[3, 4], domains=["isic", "cxr"], verbose=False)
    study.profile = dataclasses.replace(study.profile, n_test=2)
    spec = fd.StudySpec.of(study)
    assert spec.overrides == (("n_test", 2),) and len(spec.key) < 1000
    rows = fd.run_units(study_unit, list(range(8)), study, scheduler=cluster.client, progress=False)
    assert {(r["profile"], r["n_test"], tuple(r["seeds"]), tuple(r["domains"])) for r in rows} == {
        ("smoke", 2, (3, 4), ("isic", "cxr"))}
    assert os.getpid() not in {r["pid"] for r in rows}
    per_pid = pd.DataFrame(rows).groupby("pid").study.nunique()
    assert (per_pid == 1).all()                                 # one Study per worker process, reused
    serial = fd.run_units(study_unit, [0, 1], study, scheduler="serial", progress=False)
    assert {r["study"] for r in serial} == {id(study)}          # serial: the caller's own Study, not a rebuild


def test_workers_see_the_callers_settings_and_one_torch_thread_each(cluster):
    assert fd.check_worker_environment(cluster.client) == {}
    workers = cluster.client.run(fd._pinned_environment)
    assert len(workers) == 2 and all(env["FROZENSEG_OUT"] == os.environ["FROZENSEG_OUT"] for env in workers.values())
    threads = fd.run_units(torch_threads_unit, [0, 1, 2, 3], scheduler=cluster.client, progress=False)
    assert set(threads) == {max(1, fd.usable_cores() // 2)}
    written = fd._nanny_environ(cluster.client.cluster)         # what Nannies write into this process
    assert written["OMP_NUM_THREADS"] == str(max(1, fd.usable_cores() // 2)) and "PYTHONHASHSEED" in written
    leaked = {k for k, v in written.items() if os.environ.get(k) == v != cluster.environ_before.get(k)}
    assert not leaked, f"the cluster left its workers' {sorted(leaked)} in this process"


# ----------------------------------------------------------------------------- failures


def test_a_killed_worker_loses_and_duplicates_nothing(cluster, tmp_path):
    client, units = cluster.client, list(range(16))
    fn = functools.partial(toy_unit, folder=str(tmp_path), sleep=0.5)
    results = tmp_path / "results"
    pids = set(client.run(os.getpid).values())
    with ThreadPoolExecutor(1) as pool:
        sweep = pool.submit(fd.run_units, fn, units, scheduler=client, progress=False)
        victim, deadline = None, time.monotonic() + 30
        while victim is None:                 # a unit started after one finished, and under 0.25 s ago
            assert time.monotonic() < deadline and not sweep.done(), "no unit to kill within 30 s"
            time.sleep(0.01)
            finished = [f.stat().st_mtime for f in results.glob("*.json")] if results.is_dir() else []
            started = {int(f.name): f.stat().st_mtime for f in (tmp_path / "attempts").glob("*")} if finished else {}
            young = [u for u, t in started.items() if t > min(finished) and time.time() - t < 0.25
                     and not (results / f"{u:03d}.json").exists()]
            victim = max(young, key=started.get) if young else None
        pid = attempts(tmp_path, victim)[-1]
        assert pid in pids
        os.kill(pid, signal.SIGKILL)         # mid-unit: 0.25 s or more of its 0.5 s sleep left
        out = sweep.result(timeout=60)
    assert [r["unit"] for r in out] == units                               # every unit once, in order
    expect = [float(np.random.default_rng([0, u]).random()) for u in units]
    assert [r["value"] for r in out] == expect
    assert sorted(p.name for p in results.iterdir()) == [f"{u:03d}.json" for u in units]   # no duplicates, no .part
    assert [json.loads((results / f"{u:03d}.json").read_text()) for u in units] == out
    tries = attempts(tmp_path, victim)
    assert len(tries) == 2 and tries[0] == pid and tries[1] != pid         # the killed unit ran again elsewhere
    client.wait_for_workers(2, timeout=30)                                 # the nanny restarted the worker


@pytest.mark.parametrize("where", ["serial", "cluster"])
def test_a_failing_unit_fails_the_sweep_and_is_named(cluster, tmp_path, where):
    scheduler = "serial" if where == "serial" else cluster.client
    fn = functools.partial(toy_unit, folder=str(tmp_path))
    (tmp_path / "fail_003").touch()
    with pytest.raises(fd.UnitError, match=r"toy sweep: unit 3 failed with ValueError: toy failure in unit 3") as err:
        fd.run_units(fn, list(range(6)), scheduler=scheduler, desc="toy sweep", progress=False)
    assert err.value.unit == 3 and isinstance(err.value.__cause__, ValueError)
    (tmp_path / "fail_003").unlink()                                       # fixed: the same units rerun cleanly
    assert [r["unit"] for r in fd.run_units(fn, list(range(6)), scheduler=scheduler, progress=False)] == list(range(6))


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize("value", ["bogus", "local:0", "local:two", "http://host:8786", "host:8786"])
def test_an_unknown_scheduler_is_a_config_error(value, monkeypatch):
    with pytest.raises(ConfigError, match="unknown scheduler|0 workers"):
        fd.run_units(toy_unit, [0], scheduler=value)
    monkeypatch.setenv(fd.SCHEDULER_ENV, value)
    with pytest.raises(ConfigError, match=fd.SCHEDULER_ENV):
        fd.resolve_scheduler()


def test_scheduler_settings_parse():
    assert fd.resolve_scheduler("serial").kind == "serial"
    assert fd.resolve_scheduler("local:3") == fd.Scheduler("local", n_workers=3)
    assert fd.resolve_scheduler("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"


def test_the_default_is_a_local_cluster_but_one_unit_runs_here(monkeypatch):
    monkeypatch.delenv(fd.SCHEDULER_ENV, raising=False)
    assert fd.resolve_scheduler() == fd.Scheduler("local", origin="default") and fd.DEFAULT_SCHEDULER == "local"
    assert fd.run_units(pid_unit, [7, 7], progress=False) == [os.getpid()] * 2    # one distinct unit: no cluster


def test_an_unreachable_address_names_the_variable(monkeypatch):
    with socket.socket() as s:                      # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(fd, "CONNECT_TIMEOUT_S", 1)
    monkeypatch.setenv(fd.SCHEDULER_ENV, f"tcp://127.0.0.1:{port}")
    with pytest.raises(ConfigError, match=rf"(?s)tcp://127.0.0.1:{port} \(from {fd.SCHEDULER_ENV}\).*within 1 s"):
        fd.run_units(toy_unit, [0], progress=False)
