"""Benchmark parts ``concept`` (one concept fit and one source-sized annotation loop) and ``finetune`` (few-shot
decoder tuning at the largest N)."""
from __future__ import annotations

import os
import time

from .speed import machine_gflops

CONCEPT_TARGETS = {"fit_max_s": 30.0, "loop_max_s": 180.0}
# The timed loop is the source's size, not the profile's: start 5, 5 rounds of 5 images, 60 epochs for the
# first fit and `refit_epochs` for each warm-started refit, HUE selection, U on the test split every round.
# The unlabelled pool is the profile's labelled train pool (n_train images; for spleen the first n_train of its
# foreground slices, so that every domain's loop scores the same number of pool images each round).
CONCEPT_LOOP = {"start": 5, "rounds": 5, "per_round": 5, "epochs": 60}


def bench_concept(profile: str = "cpu", domains=None, n_support: int = 5, epochs: int | None = None,
                  loop: bool = True, threads: int | None = None) -> dict:
    """Per domain, warm cache: one concept fit (``n_support`` images, default epochs) and one source-sized loop."""
    import torch

    from .. import evaluation as ev
    from ..concept import DecoderBackend, annotation_loop, fit_concept, ground_truth_annotator
    from ..experiments.concept_search import concept_params, fit_settings, loop_config, test_scorer
    from ..models import set_threads
    from ..study import setup

    n_threads = set_threads(threads)
    study = setup(profile=profile, domains=domains, verbose=False)
    params = {**concept_params(study.profile), **{k: v for k, v in CONCEPT_LOOP.items() if k != "start"}}
    backend, out = DecoderBackend(study.model, study.cache), {}
    fit_s = fit_settings(params).with_(epochs=epochs or CONCEPT_LOOP["epochs"])
    for dom in study.domains:
        data = study.data(dom)
        pool = [c for c in data.train if c.mask.any()][:study.profile.n_train]   # a fit needs non-empty masks
        test = ev.test_units(data, params["n_test"])
        feats = backend.features([c.image for c in pool])                     # warm the cache first (untimed)
        test_f = backend.features([c.image for c in test])
        gflops = machine_gflops()
        t0, c0 = time.perf_counter(), time.process_time()
        c = fit_concept(backend, feats[:n_support], [p.mask for p in pool[:n_support]], fit_s, seed=0)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        gflops = [gflops, machine_gflops()]                                  # the machine's speed before and after
        row = {"fit_s": round(wall, 1), "fit_cpu_s": round(cpu, 1), "fit_epochs": fit_s.epochs,
               "fit_images": n_support, "fit_s_per_image_step": round(wall / max(1, fit_s.epochs * n_support), 4),
               "fit_flag": c.flag, "machine_gflops": gflops}
        if loop:
            cfg = loop_config(params, "hue", CONCEPT_LOOP["start"], seed=0)
            t0, c0 = time.perf_counter(), time.process_time()
            st = annotation_loop(backend, feats, ground_truth_annotator([p.mask for p in pool]), cfg, test_f,
                                 pool_truth=[p.mask for p in pool], test_scorer=test_scorer(test, data.volumes))
            row.update(loop_s=round(time.perf_counter() - t0, 1), loop_cpu_s=round(time.process_time() - c0, 1),
                       loop_fit_s=[round(v, 1) for v in st.fit_s], loop_rounds=cfg.rounds,
                       loop_epochs=cfg.settings.epochs, loop_refit_epochs=cfg.refit_settings().epochs,
                       loop_start=cfg.start, loop_per_round=cfg.per_round, loop_pool=len(pool), loop_test=len(test))
        row["meets_fit"] = row["fit_s"] <= CONCEPT_TARGETS["fit_max_s"]
        if "loop_s" in row:
            row["meets_loop"] = row["loop_s"] <= CONCEPT_TARGETS["loop_max_s"]
        out[dom] = row
        print(dom, row, flush=True)
    return {"profile": profile, "threads": n_threads, "torch_threads": torch.get_num_threads(),
            "load_avg_1min": round(os.getloadavg()[0], 2), "domains": out, "targets": CONCEPT_TARGETS,
            "loop": CONCEPT_LOOP}


def bench_finetune(profile: str = "cpu", domains=None, n: int | None = None, seed: int = 0) -> dict:
    """Few-shot decoder tuning at N (default: the largest budget, 100 in cpu/full) per domain, warm cache; seconds."""
    import resource as _res

    from ..experiments.fewshot import fewshot_params, gt_box_provider, labelled_set, tune_arm
    from ..study import setup

    study = setup(profile=profile, seeds=[seed], domains=domains, verbose=False)
    params = fewshot_params(study.profile)
    n = n or max(study.profile.budgets)
    out = {"profile": profile, "n": n, "threads": __import__("torch").get_num_threads(),
           "settings": {k: params[k] for k in ("epochs", "lr", "batch_size", "val_fraction", "patience")}}
    for dom in study.domains:
        cases = labelled_set(study.data(dom).train, n, seed)
        embs = study.embeddings(cases, desc=f"{dom} train N={n}")          # warms the cache (untimed)
        t0 = time.perf_counter()
        run = tune_arm(study.model, cases, embs, gt_box_provider, params, seed)
        out[dom] = {"tune_s": round(time.perf_counter() - t0, 1), "status": run.status, "epochs_run": run.epochs_run,
                    "best_epoch": run.best_epoch, "n_train": len(run.train_index), "n_val": len(run.val_index)}
        print(dom, out[dom], flush=True)
    out["peak_rss_mib"] = round(_res.getrusage(_res.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["meets_60s_per_domain"] = all(v["tune_s"] < 60 for k, v in out.items() if isinstance(v, dict) and "tune_s" in v)
    return out
