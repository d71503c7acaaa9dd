"""Dataset cards: what each domain's train pool and test split contain."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import evaluation as ev
from ..data.types import DomainData


def test_negatives(data: DomainData) -> str:
    """How many test units hold no target, e.g. '2 of 20 images' or '0 of 2 volumes' (scored by ev.EMPTY_RULE)."""
    units = ev.test_units(data)
    n = len({c.volume_id for c in units}) if data.volumes else len(units)
    unit = "volume" if data.volumes else "image"
    return f"{ev.negatives(units, data.volumes)} of {n} {unit}{'' if n == 1 else 's'}"


def card(data: DomainData, title: str | None = None, source: str | None = None) -> dict:
    """Counts, image sizes, foreground fraction, test negatives, scoring unit and split of one domain (``source``:
    the study's per-domain description, e.g. 'real sample (n = 51 images)')."""
    cases = data.train + data.test
    shapes = sorted({c.image.shape[:2] for c in cases})
    fg = np.array([c.mask.mean() for c in cases]) if cases else np.array([np.nan])
    size = f"{shapes[0][0]}x{shapes[0][1]}" if len(shapes) == 1 else f"{len(shapes)} sizes, e.g. {shapes[0][0]}x{shapes[0][1]}"
    return {
        "domain": title or data.domain, "source": source or data.source,
        "train pool": len(data.train), "test": len(data.test),
        "test volumes": len(data.volumes) if data.volumes else "–",
        "scored per": "3D volume" if data.volumes else "image",
        "image size (HxW)": size,
        "foreground %": f"{100 * np.nanmean(fg):.1f} (range {100 * np.nanmin(fg):.1f}–{100 * np.nanmax(fg):.1f})",
        "empty masks": int(sum(not c.mask.any() for c in cases)),
        "test negatives": test_negatives(data),
        "split": data.meta.get("split", f"phantoms generated with data seed {data.meta.get('seed', 0)}"),
    }


def cards_table(datas: dict[str, DomainData], titles: dict[str, str] | None = None,
                sources: dict[str, str] | None = None) -> pd.DataFrame:
    """One card row per domain."""
    return pd.DataFrame([card(d, (titles or {}).get(k), (sources or {}).get(k)) for k, d in datas.items()])


def pick_examples(data: DomainData, n: int = 4) -> list:
    """``n`` test cases spread over the split (deterministic), for the example grid."""
    if not data.test:
        return []
    idx = np.unique(np.linspace(0, len(data.test) - 1, num=min(n, len(data.test))).round().astype(int))
    return [data.test[i] for i in idx]


def failure_modes(datas: dict[str, DomainData], titles: dict[str, str] | None = None) -> str:
    """One line per domain on what makes it hard, as built into the phantoms (or a pointer for real data)."""
    lines = []
    for key, data in datas.items():
        text = data.meta.get("failure_modes") or f"{data.source} data: see the study's description of this domain"
        lines.append(f"- **{(titles or {}).get(key, key)}**: {text}")
    return "\n".join(lines)
