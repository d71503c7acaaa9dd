"""Notebook 03's experiment: the spleen volume pipeline fitted at a label budget (its genome cached on disk), run on
every test volume beside the naive localizer and the GT-box oracle, scored per 3D volume by the evaluation core,
and the notebook's tables and figure."""
from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import evaluation as ev
from .. import viz
from .baselines import baseline_params
from ..boxes import mask_to_box
from ..data.background import background_count, background_draw
from ..data.splits import subsample_train
from ..pipeline.core import Pipeline
from ..pipeline.router import get_route
from ..pipeline.volume import GENOME_OBJECTIVE  # noqa: F401  (the objective notebook 03 states)
from ..pipeline.volume import LOCALIZE, SKILL_ORDER, VolumePipeline, fit_volume_genome, genome_volumes
from .domain import at_largest_budget, budgets, save_masks, settings, with_budget  # noqa: F401  (notebook 03's)
from .domain_report import budget_table, chain_figure  # noqa: F401  (notebook 03's)


def volume_row(base: dict, stage: str, index: int, pred, vol, **extra) -> dict:
    """One results row: a whole-volume prediction scored in 3D by the evaluation core (HD95 in mm; a volume
    without organ scores by ``ev.EMPTY_RULE``)."""
    return {**base, "stage": stage, "method": stage, "stage_index": index,
            **ev.score_volume(pred, vol, with_hd95=True), **extra}


def fit_volume_pipeline(study, seed: int, params=None, gate=None, skills=SKILL_ORDER, genome: bool = True,
                        use_cache: bool = True, budget: int | None = None,
                        n_labels: int | None = None, data=None) -> VolumePipeline:
    """A fitted spleen volume pipeline at label budget N (default the largest): the volume prior from the N labelled
    slices of the same seeded draw the trained networks train on, prototypes from the first of them (the seed's
    support), and (``budget`` Powell evaluations > 0, default the profile's ``spleen_genome_budget``; labelled
    slices in two or more train volumes) the genome fit on those volumes (objective: :data:`GENOME_OBJECTIVE`),
    each volume segmented by a pipeline whose prior comes from the other volumes' labels; read from the on-disk
    cache when the same fit was made before (``use_cache=False`` refits). ``params`` are the fixed values and the
    genome's starting point. ``vp.labels`` holds the ids of every labelled slice used: the N organ slices and the
    organ-free slices the genome scored (``vp.background``), counted like the networks' background slices.
    ``data``: the volumes to fit on (default the study's spleen domain; a leave-one-scan-out fold passes its own)."""
    data = study.data("spleen") if data is None else data
    s = settings(study.profile)
    n_labels = min(int(n_labels or max(budgets(study.profile, data))), len(data.train))
    labelled = subsample_train(data.train, n_labels, seed)
    support = subsample_train(data.train, min(s["n_support"], n_labels), seed)
    embs = study.embeddings(support, desc="spleen support")
    vp = VolumePipeline(study.model, params, gate, skills).fit(labelled, support, embs, data.train_volumes)
    vp.labels, vp.n_labels = sorted(c.case_id for c in labelled), n_labels
    budget = int(s["spleen_genome_budget"] if budget is None else budget)
    vp.genome_budget = budget
    by_vol: dict[str, list[int]] = {}
    for c in labelled:
        by_vol.setdefault(c.volume_id, []).append(int(c.slice_index))
    vp.label_volumes = len(by_vol)
    known = {v: data.train_volumes[v] for v in by_vol if v in data.train_volumes}
    if not genome or budget <= 0 or len(known) < 2:
        return vp
    vols = genome_volumes(known, seed, n_max=int(s["spleen_genome_volumes"]), labelled=by_vol)
    # the networks' organ-free slices (experiments.baselines: the same draw over the same labelled volumes)
    draw = background_draw(known.values(), background_count(n_labels, baseline_params(study.profile)["bg_ratio"]),
                           seed)
    bg = {v.volume_id: [z for vid, z in draw if vid == v.volume_id] for v in vols}
    vp.background = sorted(known[vid].slice_case(z).case_id for vid in bg for z in bg[vid])
    vp.labels = sorted(vp.labels + vp.background)
    rec = fit_volume_genome(study.model, vols, labelled, support, embs,
                            lambda cases: study.embeddings(cases, desc="spleen genome slices"),
                            embed_crop=lambda img: study.cache.get(study.model, img), budget=budget,
                            params=vp.params, gate=vp.gate.weights, skills=skills,
                            labelled={v.volume_id: by_vol[v.volume_id] for v in vols}, background=bg,
                            cache=True, use_cache=use_cache, extra={"seed": seed}, train_volumes=data.train_volumes)
    vp.params.update(rec["params"])
    vp.genome = rec
    return vp


def run_spleen(study, seed: int, params=None, gate=None, volumes=None, naive: str = "agnostic",
               notebook: str = "03_spleen", genome_budget: int | None = None,
               n_labels: int | None = None, data=None) -> tuple[pd.DataFrame, dict]:
    """Rows (one per test volume x stage, plus 'deployed', 'naive' and 'oracle') at label budget N (default the
    largest) and the deployed volumes. Every row is a whole volume scored in 3D over all of its slices (a slice
    outside the prior's z-range is predicted empty and still counts) and carries ``n_labels`` and
    ``labels_used``.

    naive = the domain-agnostic route (frozen SAM-feature prototype localizer, box decoded once, fit on the budget's
    supports) on every slice of the prior's z-range (the same slices the pipeline processes); oracle = the frozen
    decoder prompted with the GT box of each foreground slice (no labels). ``data``: train and test volumes (default
    the study's spleen domain; :func:`frozenseg.experiments.spleen_lovo.run_lovo` passes one fold at a time).
    """
    data = study.data("spleen") if data is None else data
    vp = fit_volume_pipeline(study, seed, params, gate, budget=genome_budget, n_labels=n_labels, data=data)
    n = min(settings(study.profile)["n_support"], vp.n_labels)
    support = subsample_train(data.train, n, seed)
    naive_pipe = Pipeline(get_route(naive), study.model).fit(support, study.embeddings(support, desc="support"))
    vols = volumes or data.volumes
    rows, preds, traces = [], {}, {}
    src = data.source
    for vid in sorted(vols):
        vol = vols[vid]
        body = vp.body(vol.image, vol.spacing)
        zs = vp.prior.slice_range(body, int(vp.params["range_margin"]))
        cases = {z: vol.slice_case(z) for z in zs}
        embs = dict(zip(zs, study.embeddings([cases[z] for z in zs], desc=f"{vid} slices")))
        t0, c0 = time.perf_counter(), time.process_time()
        tr = vp.run(vol.image, embs.__getitem__, embed_crop=lambda img: study.cache.get(study.model, img),
                    frame_cache={"body": body}, spacing=vol.spacing)
        secs, cpu = time.perf_counter() - t0 - tr.embed_seconds, time.process_time() - c0
        base = {"domain": "spleen", "seed": seed, "case_id": vid, "volume_id": vid, "unit": "volume",
                "source": src, "localizer": "volume_prior_box", "n_slices": len(zs), "n_labels": vp.n_labels,
                "labels_used": len(vp.labels)}
        for i, st in enumerate(tr.stages):
            rows.append(volume_row(base, st.name, i, tr.volume(vol.mask.shape, st.name), vol,
                                 fired_slices=len(st.fired), accepted_slices=len(st.accepted), flag=tr.flag,
                                 gate=float(np.mean(list(st.gates.values()))), seconds=st.seconds))
        final = tr.volume(vol.mask.shape)
        rows.append(volume_row(base, "deployed", len(tr.stages), final, vol, fired_slices=0, accepted_slices=0,
                               flag=tr.flag, decoder_calls=tr.decoder_calls, encode_calls=tr.encode_calls,
                               seconds=secs, seconds_per_slice=secs / max(len(zs), 1),
                               cpu_seconds_per_slice=cpu / max(len(zs), 1)))
        nv = {z: naive_pipe.run(cases[z].image, embs[z]).stages[0].mask for z in zs}
        rows.append(volume_row({**base, "localizer": naive_pipe.route.localizer["name"], "labels_used": len(support)},
                               "naive", -1, ev.assemble_volume(vol.mask.shape, nv), vol, flag=""))
        om = {}
        for z in vol.foreground_slices():
            c = cases.get(z) or vol.slice_case(z)
            e = embs.get(z) or study.embeddings([c])[0]
            om[z] = study.masks.decode_boxes(study.model, c.image, e, mask_to_box(c.mask)[None])[0][0]
        rows.append(volume_row({**base, "localizer": "gt_box", "labels_used": 0}, "oracle", -2,
                               ev.assemble_volume(vol.mask.shape, om), vol, flag=""))
        preds[vid] = final
        traces[vid] = tr
    df = with_budget(pd.DataFrame(rows), vp.n_labels).assign(notebook=notebook, profile=study.profile.name,
                                                            model=study.model_key)
    return df, {"pipeline": vp, "volumes": preds, "traces": traces}


# --------------------------------------------------------------------------- tables and figures (notebook 03)


def volume_ablation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Volume Dice after each stage (``ev.ACROSS_SEEDS``), HD95's median (``ev.hd95_summary``) and how many
    processed slices each skill fired on and was kept on (summed over volumes, averaged over seeds), at the largest
    label budget."""
    d = ev.scored_units(at_largest_budget(df))
    d = d[d.stage_index >= 0]
    order = d.groupby("stage").stage_index.min().sort_values().index
    out = []
    for stage in order:
        g = d[d.stage == stage]
        sums = g.groupby("seed")[["fired_slices", "accepted_slices"]].sum().mean()
        n = g.groupby("seed").n_slices.sum().mean()
        skill = stage not in (LOCALIZE, "deployed")
        out.append({"stage": stage, "volume Dice": ev.seed_cell(g), "HD95": ev.hd95_summary(g.hd95, ev.hd95_unit(g)),
                    "fired (slices)": f"{sums.fired_slices:.0f} / {n:.0f}" if skill else "–",
                    "accepted (slices)": f"{sums.accepted_slices:.0f}" if skill else "–"})
    return pd.DataFrame(out)


def volume_genome_table(pipelines: dict) -> pd.DataFrame:
    """One row per seed of the genome records of fitted volume pipelines ({seed: VolumePipeline}); empty when
    none was fit."""
    rows = []
    for seed, vp in pipelines.items():
        g = vp.genome
        if g:
            rows.append({"seed": seed, "train volumes": ", ".join(g["volumes"]), "labelled slices": g["n_labels"],
                         "organ-free slices": g.get("n_background", 0), "evaluations": g["evals"],
                         "3D Dice at the defaults": round(g["start_dice"], 3),
                         "3D Dice at the genome": round(g["fit_dice"], 3), "fit seconds": g.get("seconds"),
                         "read from cache": g["cached"]})
    return pd.DataFrame(rows)


def volume_gap_table(df: pd.DataFrame) -> pd.DataFrame:
    """Naive, deployed and oracle volume Dice and the gap closed = (deployed - naive) / (oracle - naive) per seed,
    each ``ev.ACROSS_SEEDS``, at the largest label budget."""
    d = ev.scored_units(at_largest_budget(df))
    stages = ("naive", "deployed", "oracle")
    row = {st: ev.seed_cell(d[d.stage == st]) for st in stages}
    m = d[d.stage.isin(stages)].groupby(["seed", "stage"]).dice.mean().unstack().reindex(columns=list(stages))
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = ((m["deployed"] - m["naive"]) / (m["oracle"] - m["naive"])).to_numpy(float)
    mean, sd, _ = ev.mean_sd(gap)
    row["gap closed"] = ev.fmt_mean_sd(mean, sd)
    return pd.DataFrame([row])


def slice_dice_rows(volumes: dict, preds: dict) -> pd.DataFrame:
    """Per-slice Dice of the deployed prediction on every ground-truth foreground slice (a gallery diagnostic,
    never a reported score)."""
    rows = []
    for vid, pred in preds.items():
        vol = volumes[vid]
        for z in vol.foreground_slices():
            rows.append({"volume_id": vid, "slice_index": z, "dice": ev.dice(pred[:, :, z], vol.mask[:, :, z]),
                         "area": int(vol.mask[:, :, z].sum())})
    return pd.DataFrame(rows, columns=["volume_id", "slice_index", "dice", "area"])


def gallery_figure(volumes: dict, preds: dict, n: int = 3):
    """The ``n`` best and ``n`` worst ground-truth slices by Dice: ground truth green, prediction red."""
    s = slice_dice_rows(volumes, preds).sort_values(["dice", "volume_id", "slice_index"], kind="stable")
    picks = [("best", s.tail(n).iloc[::-1]), ("worst", s.head(n))]
    fig, axes = plt.subplots(2, n, figsize=(2.4 * n, 5.2), squeeze=False)
    for r, (label, rows) in enumerate(picks):
        for c in range(n):
            ax = axes[r, c]
            if c >= len(rows):
                ax.set_axis_off()
                continue
            row = rows.iloc[c]
            vol, z = volumes[row.volume_id], int(row.slice_index)
            viz.overlay(ax, np.repeat(vol.image[:, :, z, None], 3, 2), vol.mask[:, :, z], preds[row.volume_id][:, :, z],
                        title=f"{label}: {row.volume_id} z{z}\nslice Dice {row.dice:.3f}")
    fig.tight_layout()
    return fig
