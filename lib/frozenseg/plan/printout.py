"""The plan printed before the first notebook of a full run (and by ``make plan``): datasets and weights found,
sizes, training runs and their caps, and the estimated length."""
from __future__ import annotations

from pathlib import Path

from .. import paths
from ..config import get_profile


def _size(nbytes: int) -> str:
    """Bytes as MB or GB, whole numbers."""
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**30 else f"{max(nbytes / 2**20, 1):.0f} MB"


def plan_lines(profile: str, seeds, data_root: str | Path | None = None, notebooks=None,
               timings_path: str | Path | None = None) -> list[str]:
    """Every line of the plan of a run of ``profile`` with ``seeds`` at ``data_root``."""
    from .estimate import estimate_lines, test_units, work_units
    from .sizes import domain_sizes, entry_sizes, present_keys, training_runs
    from .uses import effects

    prof = get_profile(profile)
    seeds = [int(s) for s in seeds]
    rows = entry_sizes(data_root)
    missing = {m["key"]: m for m in effects(data_root)}
    root = Path(data_root).expanduser().resolve() if data_root else None
    lines = [f"Plan of this run: profile {profile}, seeds {seeds}, model {prof.model}, "
             f"data root {root or paths.data_root()}"]
    lines.append("Datasets and weights:")
    width = max(len(r["key"]) for r in rows)
    for r in rows:
        if r["present"]:
            what = f"{r['files']} images/volumes" if "files" in r else _size(r.get("bytes", 0))
            lines.append(f"  {r['key']:<{width}}  {r['kind']:<8} found    {what}")
        else:
            m = missing[r["key"]]
            nbs = ", ".join(m["notebooks"]) or "no notebook by default"
            lines.append(f"  {r['key']:<{width}}  {r['kind']:<8} missing  {m['effect']}: {nbs}")
    sizes = domain_sizes(prof, data_root)
    lines.append("Sizes per domain (test units are what every table scores; spleen counts slices):")
    for d, v in sizes.items():
        if v["source"] == "missing":
            lines.append(f"  {d:<7} {v['problem']}")
            continue
        vols = (f" ({v['test_volumes']} test volumes, {v['train_volumes']} train volumes, about "
                f"{v['slices_per_volume']:.0f} slices each)" if "test_volumes" in v else "")
        rec = f"{v['records']} records, " if "records" in v else ""
        lines.append(f"  {d:<7} {v['source']:<8} {rec}test {v['test']}, train pool {v['train_pool']}{vols}; "
                     f"split: {v['split']}" + (f"; {v['problem']}" if v.get("problem") else ""))
    present = present_keys(data_root)
    lines.append("Training runs and their caps:")
    for t in training_runs(prof, sizes, seeds, present):
        lines.append(f"  {t['notebook']}: {t['runs']} {t['what']}; {t['cap']}")
    units = work_units(prof, sizes, seeds, present)
    return lines + estimate_lines(units, notebooks, timings_path, test_units(sizes, seeds))
