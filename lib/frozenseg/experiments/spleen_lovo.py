"""Leave one scan out on a real spleen sample (notebook 03): every volume is the test volume once, the volume prior
and prototypes fit on the labelled slices of the volumes of the other scans (a volume of the test volume's scan group
is never in its training fold), scored per 3D volume by the evaluation core beside the naive localizer and the
GT-box oracle; and the table that puts the samples side by side."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .. import evaluation as ev
from ..data.loaders import natural_key
from ..data.types import DomainData, Volume
from ..errors import DataError
from .budgets import budgets
from .spleen import run_spleen

STAGES = ("naive", "deployed", "oracle")
# The real spleen samples a leave-one-scan-out run can take (manifest key -> loader name in data.loaders, title).
SAMPLES = {"spleen_ct_silver": ("load_spleen_silver", "CT, silver labels (TotalSegmentator's output)"),
           "spleen_mr": ("load_spleen_mr", "MR T2-SPIR (CHAOS), manual labels")}


@dataclass
class Sample:
    """One real spleen sample: its volumes and how every table names it."""

    key: str
    title: str
    volumes: list
    detail: str


def lovo_samples(study, keys=None) -> dict[str, Sample]:
    """The real spleen samples to evaluate leave one scan out that are present under the data root: ``keys``
    (manifest keys of :data:`SAMPLES`; None: the profile's ``extra['spleen_lovo']``, the sample profile's CT and
    MR folders), each loaded whole (every volume a test volume once)."""
    from .. import manifest
    from ..data import loaders

    keys = tuple(study.profile.extra.get("spleen_lovo", ()) if keys is None else keys)
    unknown = sorted(set(keys) - set(SAMPLES))
    if unknown:
        raise DataError(None, f"no leave-one-scan-out sample {unknown}", f"choose from {sorted(SAMPLES)}")
    present = {r["key"] for r in manifest.status() if r["present"]}
    out = {}
    for key in keys:
        if key not in present:
            continue
        loader, title = SAMPLES[key]
        vols = getattr(loaders, loader)()
        label = "real sample" if study.profile.name == "sample" else "real"
        silver = ", silver labels: a model's output" if vols[0].meta.get("labels") == "silver" else ""
        detail = f"{label} (n = {len(vols)} volumes of {len({scan_group(v) for v in vols})} scans{silver})"
        out[key] = Sample(key, title, vols, detail)
    return out


def scan_group(vol: Volume) -> str:
    """The scan a volume was cut from (``meta['group']``, set by the loaders; else the volume itself)."""
    return str((vol.meta or {}).get("group") or vol.volume_id)


def lovo_folds(volumes) -> list[tuple[Volume, list[Volume]]]:
    """(test volume, train volumes) for every volume, in natural order: the train volumes are every volume of
    another scan group."""
    vols = sorted(volumes.values() if isinstance(volumes, dict) else volumes, key=lambda v: natural_key(v.volume_id))
    if len({scan_group(v) for v in vols}) < 2:
        raise DataError(None, f"leave one scan out needs volumes of two or more scans, got {len(vols)} volume(s) "
                        "of one", "add volumes of another scan, or use the profile's split")
    return [(v, [u for u in vols if scan_group(u) != scan_group(v)]) for v in vols]


def run_lovo(study, seed: int, volumes, sample: str, source: str = "real", params=None, gate=None,
             notebook: str = "03_spleen") -> pd.DataFrame:
    """Rows of :func:`frozenseg.experiments.spleen.run_spleen` for every fold of :func:`lovo_folds`, each at the
    largest label budget N the fold's train pool holds, tagged with ``sample`` and the test volume's scan group."""
    parts = []
    for test, train in lovo_folds(volumes):
        meta = {"split": f"leave one scan out: test {test.volume_id}, train {', '.join(v.volume_id for v in train)}"}
        data = DomainData.from_volumes("spleen", source, train, [test], meta)
        df, _ = run_spleen(study, seed, params, gate, data=data, n_labels=max(budgets(study.profile, data)),
                           notebook=notebook)
        parts.append(df.assign(sample=sample, group=scan_group(test),
                               train_volumes=", ".join(v.volume_id for v in train)))
    return pd.concat(parts, ignore_index=True)


def lovo_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per sample and test volume: naive, deployed and GT-box oracle volume Dice (``ev.ACROSS_SEEDS``), the labels
    the pipeline used and its gap to the oracle; then per sample the mean over volumes with its bootstrap interval
    over scans (the volumes of one scan resampled together; below ``ev.MIN_UNITS`` scans: no interval)."""
    d = ev.scored_units(df)
    d = d[d.stage.isin(STAGES)]
    out = []
    for sample, s in d.groupby("sample", sort=False):
        for vid, g in s.groupby("volume_id", sort=False):
            dep = g[g.stage == "deployed"]
            out.append({"sample": sample, "test volume": vid, "scan": g.group.iloc[0],
                        "train volumes": g.train_volumes.iloc[0], "labels used": int(dep.labels_used.iloc[0]),
                        **{st: ev.seed_cell(g[g.stage == st]) for st in STAGES},
                        "oracle - deployed": f"{(g[g.stage == 'oracle'].dice.mean() - dep.dice.mean()):.3f}"})
        row = {"sample": sample, "test volume": f"mean of {s.volume_id.nunique()} volumes", "scan": "",
               "train volumes": "", "labels used": ""}
        for st in STAGES:
            row[st] = ev.fmt_interval(ev.unit_interval(s[s.stage == st], cluster="group"))
        gap = s[s.stage == "oracle"].dice.mean() - s[s.stage == "deployed"].dice.mean()
        out.append({**row, "oracle - deployed": f"{gap:.3f}"})
    return pd.DataFrame(out)
