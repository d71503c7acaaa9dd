"""What a trained-baseline run stands on, shared by the sweep and the nnU-Net adapter: where runs live, the N-label
budget check, the train volumes and the test units a run is scored on."""
from __future__ import annotations

from pathlib import Path

from .. import evaluation as ev
from .. import paths
from ..errors import ConfigError

NOTEBOOK = "06_trained_baselines"


def runs_root(profile: str) -> Path:
    """Where run folders live: ``results/<profile>/06_trained_baselines/runs/``."""
    return paths.results_dir(profile) / NOTEBOOK / "runs"


def check_budget(domain: str, n: int, pool: int) -> None:
    """Raise a ConfigError naming the pool size when N exceeds the train pool."""
    if n < 1 or n > pool:
        raise ConfigError(f"N={n} labelled cases asked for domain {domain!r}, but its train pool holds {pool}; "
                          "use budgets <= the pool size or a profile with a larger n_train")


def train_volume(study, domain: str, volume_id: str):
    """A train volume by id (the DomainData keeps them), or None when the domain has none (2D folders)."""
    data = study.data(domain)
    if volume_id not in data.meta.get("train_volumes", []):
        raise ConfigError(f"{volume_id!r} is not a train volume of {domain!r}")
    return data.train_volumes.get(volume_id)


def test_units(study, domain: str, n_test: int | None) -> tuple[list, list]:
    """(2D test cases, test volumes): ``ev.test_units`` (2D negatives kept; spleen: whole volumes, every slice
    predicted)."""
    data = study.data(domain)
    test = ev.test_units(data, n_test)
    if data.volumes:
        return [], [data.volumes[v] for v in dict.fromkeys(c.volume_id for c in test)]
    return test, []
