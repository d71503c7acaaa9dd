"""Seeded splits: disjointness, fixed test sets, nested N-label subsets, whole-volume splits."""
from __future__ import annotations

import numpy as np
import pytest

from frozenseg.data.splits import split_cases, split_indices, split_volumes, subsample_train
from frozenseg.data.types import Case, Volume
from frozenseg.errors import ConfigError


def _case(i: int, volume: str | None = None) -> Case:
    """Tiny case with a given id and optional volume."""
    return Case(case_id=f"c{i:03d}", domain="isic", image=np.zeros((4, 4, 3), np.uint8),
                mask=np.zeros((4, 4), bool), volume_id=volume)


def _volume(i: int) -> Volume:
    """Tiny volume with a given index."""
    m = np.zeros((4, 4, 3), bool)
    m[1, 1, 1] = True
    return Volume(volume_id=f"spleen_p{i:03d}", domain="spleen", image=np.zeros((4, 4, 3), np.uint8),
                  mask=m, spacing=(1.0, 1.0, 5.0))


def test_split_indices_disjoint_and_complete():
    """Train and test partition range(n); sizes as asked; deterministic by seed."""
    tr, te = split_indices(50, 12, 0)
    assert len(te) == 12 and len(tr) == 38
    assert not set(tr) & set(te) and set(tr) | set(te) == set(range(50))
    assert (tr, te) == split_indices(50, 12, 0)
    assert te != split_indices(50, 12, 1)[1]


def test_split_indices_fraction_and_errors():
    """A float in (0, 1) is a fraction; too many test items is a ConfigError (a ValueError)."""
    assert len(split_indices(50, 0.2, 0)[1]) == 10
    assert len(split_indices(10, None, 0)[1]) == 2
    with pytest.raises(ConfigError):
        split_indices(5, 6, 0)
    with pytest.raises(ValueError):
        split_indices(5, -1, 0)


def test_subsample_nested():
    """For one seed, the N=10 set lies inside N=25, which lies inside N=50."""
    pool = [_case(i) for i in range(100)]
    s10, s25, s50 = (subsample_train(pool, n, 3) for n in (10, 25, 50))
    ids = lambda s: {c.case_id for c in s}  # noqa: E731
    assert len(s10) == 10 and len(s25) == 25 and len(s50) == 50
    assert ids(s10) <= ids(s25) <= ids(s50)
    assert ids(subsample_train(pool, 10, 3)) == ids(s10)
    assert ids(subsample_train(pool, 10, 4)) != ids(s10)
    assert subsample_train(pool, 100, 3) == pool


def test_subsample_too_large():
    """Asking for more labels than the pool holds raises a clear error."""
    pool = [_case(i) for i in range(12)]
    with pytest.raises(ConfigError, match="N=25"):
        subsample_train(pool, 25, 0)
    with pytest.raises(ValueError):
        subsample_train(pool, 13, 0)


def test_split_volumes_whole():
    """Volumes split whole: no volume on both sides; a dict input works too."""
    vols = [_volume(i) for i in range(8)]
    tr, te = split_volumes(vols, 3, 0)
    assert len(te) == 3 and len(tr) == 5
    assert not {v.volume_id for v in tr} & {v.volume_id for v in te}
    tr2, te2 = split_volumes({v.volume_id: v for v in vols}, 3, 0)
    assert [v.volume_id for v in te2] == [v.volume_id for v in te]
    slices_tr = {c.volume_id for v in tr for c in (v.slice_case(z) for z in v.foreground_slices())}
    assert not slices_tr & {v.volume_id for v in te}


def test_split_cases_fixed_and_grouped():
    """2D cases split by seed; slices of one volume never straddle the split."""
    cases = [_case(i) for i in range(40)]
    tr, te = split_cases(cases, 10, 0)
    assert len(te) == 10 and len(tr) == 30 and not {c.case_id for c in tr} & {c.case_id for c in te}
    assert [c.case_id for c in te] == [c.case_id for c in split_cases(cases, 10, 0)[1]]
    slices = [_case(i, volume=f"v{i // 5}") for i in range(40)]   # 8 volumes x 5 slices
    tr, te = split_cases(slices, 2, 0)
    assert len(te) == 10 and not {c.volume_id for c in tr} & {c.volume_id for c in te}
