"""Seeded train/test splits and nested N-label train subsets."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

from ..errors import ConfigError
from .types import Case, Volume

T = TypeVar("T")

DEFAULT_TEST_FRACTION = 0.2


def _resolve_n_test(n_items: int, n_test: int | float | None) -> int:
    """Number of test items: an int, a fraction in (0, 1), or None for 20 %."""
    if n_test is None:
        n_test = DEFAULT_TEST_FRACTION
    if isinstance(n_test, float) and not float(n_test).is_integer():
        if not 0.0 < n_test < 1.0:
            raise ConfigError(f"test fraction must lie in (0, 1), got {n_test}")
        return max(1, int(round(n_items * n_test))) if n_items > 1 else 0
    n_test = int(n_test)
    if n_test < 0 or n_test > n_items:
        raise ConfigError(f"n_test={n_test} must lie in [0, {n_items}] (there are {n_items} items to split)")
    return n_test


def split_indices(n_items: int, n_test: int | float | None, seed: int) -> tuple[list[int], list[int]]:
    """Disjoint sorted (train, test) index lists of range(n_items); the test set is fixed by ``seed``."""
    if n_items < 0:
        raise ConfigError(f"n_items must be >= 0, got {n_items}")
    k = _resolve_n_test(n_items, n_test)
    perm = np.random.default_rng([int(seed), 0x5E11]).permutation(n_items)
    return sorted(int(i) for i in perm[k:]), sorted(int(i) for i in perm[:k])


def nested_order(n_items: int, seed: int) -> list[int]:
    """Seeded permutation of range(n_items); every prefix is a nested subset."""
    return [int(i) for i in np.random.default_rng([int(seed), 0x5AB5]).permutation(n_items)]


def subsample_train(cases: Sequence[T], n: int, seed: int) -> list[T]:
    """``n`` items of ``cases`` chosen by ``seed``, nested across n (the N=10 set lies inside the N=25 set)."""
    if n < 0 or n > len(cases):
        raise ConfigError(
            f"asked for N={n} labelled cases but the train pool holds {len(cases)}; "
            "use a smaller budget or a profile with a larger n_train"
        )
    keep = sorted(nested_order(len(cases), seed)[:n])
    return [cases[i] for i in keep]


def _as_list(volumes: Sequence[Volume] | Mapping[str, Volume]) -> list[Volume]:
    """Volumes as a list, whether given as a list or as a dict by id."""
    return list(volumes.values()) if isinstance(volumes, Mapping) else list(volumes)


def split_volumes(volumes: Sequence[Volume] | Mapping[str, Volume], n_test: int | float | None,
                  seed: int, groups: Mapping[str, str] | None = None) -> tuple[list[Volume], list[Volume]]:
    """(train, test) lists of whole volumes: no volume contributes slices to both sides. With ``groups`` (volume id
    -> scan or patient), ``n_test`` counts groups and the volumes of one group stay on one side."""
    vols = _as_list(volumes)
    ids = [v.volume_id for v in vols]
    if len(set(ids)) != len(ids):
        raise ConfigError("volume ids must be unique to split by volume")
    if not groups:
        tr, te = split_indices(len(vols), n_test, seed)
        return [vols[i] for i in tr], [vols[i] for i in te]
    keys = sorted({groups.get(i, i) for i in ids})
    tr, te = split_indices(len(keys), n_test, seed)
    test_groups = {keys[k] for k in te}
    return ([v for v in vols if groups.get(v.volume_id, v.volume_id) not in test_groups],
            [v for v in vols if groups.get(v.volume_id, v.volume_id) in test_groups])


def _group_key(case: Case) -> str:
    """Split unit of a case: its volume when it is a slice, else itself."""
    return case.volume_id if case.volume_id is not None else case.case_id


def split_cases(cases: Sequence[Case], n_test: int | float | None, seed: int) -> tuple[list[Case], list[Case]]:
    """Fixed (train, test) split of 2D cases by ``seed``; slices of one volume always stay together."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(cases):
        groups.setdefault(_group_key(c), []).append(i)
    keys = sorted(groups)
    tr, te = split_indices(len(keys), n_test, seed)
    pick = lambda sel: [cases[i] for i in sorted(j for k in sel for j in groups[keys[k]])]  # noqa: E731
    return pick(tr), pick(te)
