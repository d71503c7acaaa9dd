"""One annotate round: read the collection, encode what is new, fit the route on every label, predict each unlabelled
item (resuming past ones already written for the same images and fit), then the CSV, the queue, the page and the
round."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from ..pipeline.router import scores_table
from . import outputs as out_
from .fit import fit_collection, labelled_cases, check_labels, predict_item
from .inputs import Item, read_collection
from .review import item_view, write_review


def _encode_all(model, cache, images: list[np.ndarray], progress: bool) -> int:
    """Encode (and cache) every image not cached yet, with a progress bar; returns how many were encoded."""
    todo = [im for im in images if not cache.path(model, im).is_file()]
    for im in tqdm(todo, desc=f"encoding ({model.key})", unit="img", disable=not progress or not todo):
        cache.get(model, im)
    return len(todo)


def _mask_back(out: Path, item: Item, rec: dict) -> np.ndarray:
    """A written mask read back in the item's working grid (for the review page of a resumed item)."""
    path = out / rec["mask"]
    if item.kind == "image":
        return out_.read_png_mask(path, item.image.shape[:2])
    from ..data.files import read_nifti_image

    data = read_nifti_image(path)[0]
    return (data[:, :, None] if data.ndim == 2 else data) > 0


def _moved(prev: dict | None, fit) -> str:
    """How the chosen route's cross-validated Dice moved since the previous round."""
    if prev is None:
        return "first round"
    if prev.get("cv_dice") is None or fit.cv_dice is None:
        return f"round {prev['round']} had {prev['labels']} labels; no cross-validated Dice to compare"
    return (f"cross-validated Dice {prev['cv_dice']:.3f} ({prev['chosen']}, {prev['labels']} labelled, round "
            f"{prev['round']}) -> {fit.cv_dice:.3f} ({fit.route}, {fit.n_labels} labelled cases), "
            f"{fit.cv_dice - prev['cv_dice']:+.3f}")


def annotate(folder: str | Path, out: str | Path | None = None, model="litemedsam", route: str = "auto",
             batch: int = 5, candidates=None, folds: int | None = None, genome_budget: int | None = None,
             finalists: int | None = None, seed: int = 0, max_side: int | None = 512, window=None, cache=None,
             progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run one round on ``folder`` (images/ + the few masks/) and write masks, uncertainty.csv, to_annotate.txt,
    review.html and rounds.json under ``out`` (default ``folder/frozenseg``); returns a summary dict."""
    from ..cache import EmbeddingCache
    from ..models import load_model

    folder = Path(folder).resolve()
    out = Path(out).resolve() if out is not None else folder / "frozenseg"
    coll = read_collection(folder, max_side=max_side, window=window)
    cases = labelled_cases(coll)
    check_labels(coll, cases, route)                      # every input error is raised before anything is written
    model = load_model(model) if isinstance(model, str) else model
    cache = cache or EmbeddingCache()
    todo = coll.unlabelled
    log(f"{folder}: {len(coll.items)} item(s), {len(coll.labelled)} labelled ({len(cases)} labelled case(s)), "
        f"{len(todo)} to segment" + (f", {len(coll.skipped)} skipped as unreadable" if coll.skipped else ""))
    clock = time.perf_counter()
    encoded = _encode_all(model, cache, [c.image for c in cases] + [s for it in todo for s in it.slices()], progress)
    timings = {"encode_s": time.perf_counter() - clock}
    clock = time.perf_counter()
    log(f"encoded {encoded} new image(s); the rest came from the embedding cache ({cache.root})")
    embs = [cache.get(model, c.image) for c in cases]
    fit = fit_collection(model, cases, embs, out / out_.STATE, route, candidates, folds, genome_budget, finalists,
                         seed, progress)
    del embs
    timings["fit_s"] = time.perf_counter() - clock
    if len(fit.scores):
        log("route choice, k-fold cross-validation on the labels:\n" + scores_table(fit.scores).to_string(index=False))
    cv = "" if fit.cv_dice is None else f", cross-validated Dice {fit.cv_dice:.3f} ± {fit.cv_sd:.3f} (sd across folds)"
    log(f"chosen route: {fit.route}{cv}")
    rounds = out_.read_rounds(out)
    prev = next((r for r in reversed(rounds) if sorted(r["labelled"]) != sorted(it.name for it in coll.labelled)),
                None)
    log(f"since the last round: {_moved(prev, fit)}")
    out_.drop_stale(out, {it.name for it in todo})
    records, views, resumed = [], {}, 0
    clock = time.perf_counter()
    for item in tqdm(todo, desc="predicting", unit="item", disable=not progress or not todo):
        rec = out_.load_record(out, item, fit.fit_key)
        if rec is not None:
            mask, resumed = _mask_back(out, item, rec), resumed + 1
        else:
            mask, hue = predict_item(item, fit, model, cache)
            rec = out_.save_record(out, item, fit.fit_key, out_.write_mask(out, item, mask), hue.to_dict())
        records.append(rec)
        views[item.name] = item_view(item, mask)
    timings["predict_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    table = out_.uncertainty_table(records, batch)
    out_.write_tables(out, table, folder)
    queued = list(table[table.queued].name)
    entry, _ = out_.record_round(out, [it.name for it in coll.labelled], fit, queued, len(records))
    write_review(out, table, views, fit, out_.read_rounds(out), coll, coll.skipped)
    timings["write_s"] = time.perf_counter() - clock
    log(f"round {entry['round']}: {len(records)} mask(s) in {out / 'masks'} ({resumed} kept from an earlier run); "
        f"queued for correction ({len(queued)}): {', '.join(queued) or 'none'}; see {out / 'review.html'}")
    return {"out": out, "round": entry, "table": table, "fit": fit, "encoded": encoded, "resumed": resumed,
            "skipped": coll.skipped, "previous": prev, "timings": {k: round(v, 2) for k, v in timings.items()}}
