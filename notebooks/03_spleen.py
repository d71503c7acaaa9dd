# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: frozenseg
#     language: python
#     name: frozenseg
# ---

# %% [markdown]
# # 03 · Spleen (CT): a 3D volume prior and GT-free cross-slice skills, scored per volume
#
# The labelled **train volumes** give a 3D prior: where the spleen sits in each volume's **body frame**, found from
# the image alone (the body's box on every slice, the body's range of slices, lengths in mm), so that a prior fit on
# scans of one field of view transfers to another. It says which slices of a test volume to process (the train
# organs' range along the body, never the test mask's slices) and places a **volume-prior box** on each. Then,
# each proposal kept only if a GT-free **gate** (decoder IoU, compactness, edge contrast, the organ's grey level
# learned from the support as a rank among the body's intensities, and the trajectory) improves:
# a **within-volume prior** (a smooth trajectory of extent, centroid and area fit to the confident slices;
# slices outside it emptied; slices that disagree re-decoded from a sibling-mask seed), a **selective
# multi-prototype** re-decode where the gate stays low, a SAM re-prompt **boundary polish**, and a **pyramid**
# keep-best (crop, zoom and re-decode the tiny tip slices at higher resolution). Every number is a 3D Dice of a
# whole volume, scored by the evaluation core (`frozenseg.evaluation`); the source study's own chain on real CT is
# printed below, labelled as the source's.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | full
seeds = [0]          # experiment seeds: which train slices are the multi-prototype support
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full)
model = None         # None: the profile's model (litemedsam for smoke/cpu)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}
genome_budget = None # Powell evaluations of the spleen genome; None: the profile's spleen_genome_budget
lovo = None          # real spleen samples evaluated leave one scan out; None: the profile's (sample: CT and MR folders)

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from frozenseg import evaluation as ev
from frozenseg.experiments.spleen import (GENOME_OBJECTIVE, at_largest_budget, budget_table, budgets, chain_figure,
                                          gallery_figure, run_spleen, save_masks, volume_ablation_table,
                                          volume_gap_table, volume_genome_table)
from frozenseg.experiments.spleen_lovo import lovo_samples, lovo_table, run_lovo
from frozenseg.report import source_chain_note
from frozenseg.results import save_results
from frozenseg.study import setup

DOMAIN = "spleen"
study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
art = study.artifacts("03_spleen")
ACTIVE = DOMAIN in study.domains
if not ACTIVE:
    print(art.note(f"{DOMAIN} is not among this run's domains ({study.domains}); nothing to show."))
elif source_chain_note(DOMAIN):
    print(art.note(source_chain_note(DOMAIN), name="reference", reference=True))

# %% [markdown]
# ## Run: every test volume, every seed, every label budget N
#
# At each N the volume prior, the prototypes and (when fitted) the genome come from the same seeded draw of N
# labelled spleen slices the trained networks of section 4 train on; N counts labelled slices, the unit the
# networks see. Every test volume is scored over all of its slices; a test volume without spleen (a negative)
# counts by the evaluation core's empty-mask rule.

# %%
if ACTIVE:
    parts, infos = [], {}
    for seed in study.seeds:
        for n in budgets(study.profile, study.data(DOMAIN)):
            df, info = run_spleen(study, seed, genome_budget=genome_budget, n_labels=n)
            parts.append(df)
        save_masks(info["volumes"], "03_spleen", study.profile.name, DOMAIN, seed)   # the largest N's
        infos[seed] = info
    results = pd.concat(parts, ignore_index=True)
    save_results(results, "03_spleen", study.profile.name)
    first = infos[study.seeds[0]]
    n_vol = results.volume_id.nunique()
    n_neg = ev.negatives(study.data(DOMAIN).test, study.data(DOMAIN).volumes)
    display(art.table(budget_table(results), "spleen_budgets", caption=(
        f"3D Dice over all slices of the {n_vol} test volumes ({n_neg} without spleen; {ev.EMPTY_RULE}) at each "
        f"label budget N ({ev.ACROSS_SEEDS}), with how many labelled train slices each method used (the naive "
        "localizer the supports only, the GT-box oracle none; the pipeline's count includes the organ-free slices "
        "its genome scored, as the networks' includes their background slices).")))
    dep = at_largest_budget(results)
    dep = dep[dep.stage == "deployed"]
    timing = pd.DataFrame([{
        "volumes x seeds": len(dep), "processed slices per volume": f"{dep.n_slices.mean():.1f}",
        "decoder calls per slice": f"{(dep.decoder_calls / dep.n_slices).mean():.2f}",
        "pyramid crop encodes per volume": f"{dep.encode_calls.mean():.1f}",
        "decode work per slice (wall s)": f"{dep.seconds_per_slice.mean():.3f}",
        "decode work per slice (CPU s)": f"{dep.cpu_seconds_per_slice.mean():.3f}"}])
    display(art.table(timing, "spleen_timing", caption=(
        "Work beyond encoding the processed slices (embeddings are cached): decoder calls, wall and CPU seconds "
        "per processed slice (wall time includes waiting for a shared CPU), including gate "
        "evaluation and the pyramid's crop encodes (cached on disk after the first run).")))

# %% [markdown]
# ## Leave one scan out on the real spleen samples
#
# With a handful of real volumes, one fixed test scan says little. Here every volume of each real spleen sample
# present is the test volume once: the volume prior and the prototypes are fit on the labelled slices of the
# volumes of the **other scans** (a volume cut from the test volume's scan never trains its fold), at the largest
# label budget N the fold's train pool holds, with the same route, parameters and gate as above. The MR sample is
# not CT: nothing was tuned to it, so its row shows how the CT route transfers across modality.

# %%
samples = lovo_samples(study, lovo) if ACTIVE else {}
if samples:
    lovo_rows = pd.concat([run_lovo(study, seed, s.volumes, s.title) for seed in study.seeds
                           for s in samples.values()], ignore_index=True)
    save_results(lovo_rows, "03_spleen_lovo", study.profile.name)
    details = "; ".join(f"{s.title}: {s.detail}" for s in samples.values())
    display(art.table(lovo_table(lovo_rows), "spleen_lovo", caption=(
        f"Leave one scan out ({details}): 3D Dice of each test volume over all of its slices ({ev.ACROSS_SEEDS}) "
        "for the naive localizer, the deployed pipeline and the GT-box oracle, with the labelled slices the "
        f"pipeline used; per sample, the mean over its volumes with a {ev.LEVEL:.0%} percentile bootstrap interval "
        f"whose units are scans ({ev.N_BOOT} resamples, the volumes of one scan resampled together; fewer than "
        f"{ev.MIN_UNITS} scans: no interval).")))
elif ACTIVE:
    print(art.note("No real spleen sample to evaluate leave one scan out in this run (the profile's samples: "
                   f"{list(study.profile.extra.get('spleen_lovo', ())) or 'none'}, present under the data root "
                   "only)."))

# %% [markdown]
# ## The route: volume prior, skills, parameters

# %%
if ACTIVE:
    vp = first["pipeline"]
    display(art.table(vp.describe(), "spleen_route", caption=(
        f"Route of {study.title(DOMAIN)} at N={vp.n_labels}: the 3D volume prior learned from the N labelled train "
        f"slices, the skills in order (each kept only if the gate improves) and every parameter of seed "
        f"{study.seeds[0]}. Parameters marked 'genome' were fit by bounded Powell on train volumes the labels fall "
        "in, each segmented by a pipeline whose prior and prototypes came from the other volumes' labels (leave "
        f"one out); the objective: {GENOME_OBJECTIVE}. The rest are fixed defaults. Test volumes are never used.")))
    genome = volume_genome_table({sd: inf["pipeline"] for sd, inf in infos.items()})
    if len(genome):
        display(art.table(genome, "spleen_genome", caption=(
            "The genome fit per seed at the largest N: its objective (the "
            f"{GENOME_OBJECTIVE}; leave-one-out prior) at the default parameters and at the values found, within "
            "the budget of Powell evaluations; fit seconds are those of the run that fitted it (the fit is cached "
            "on disk).")))
    else:
        print(art.note(f"No genome was fit in this run (the {study.profile.name} profile's budget: "
                       f"{vp.genome_budget} Powell evaluations; labels in {vp.label_volumes} train volume(s); a fit "
                       "needs a budget above 0 and labelled slices in two or more train volumes): every parameter "
                       "above is a fixed default. Pass genome_budget to this notebook to fit it."))

# %% [markdown]
# ## Skill-by-skill ablation (volume Dice) and the oracle gap closed

# %%
if ACTIVE:
    display(art.table(volume_ablation_table(results), "spleen_ablation", caption=(
        f"Skill-by-skill ablation on {n_vol} test volumes: 3D Dice after each stage ({ev.ACROSS_SEEDS}), HD95's "
        "median over volumes and seeds (a volume where exactly one of prediction and ground truth is empty has no "
        "boundary to measure: counted, never given a distance), and on how many processed slices each skill fired and was accepted by the "
        "GT-free keep-best gate (the within-volume prior's count includes the slices it emptied outside the "
        "fitted extent).")))
    display(art.table(volume_gap_table(results), "spleen_gap", caption=(
        "naive = the domain-agnostic route (frozen SAM-feature prototype localizer, box decoded once) on the "
        "same slices the pipeline processes; oracle = the ground-truth box of every foreground slice through "
        "the frozen decoder; gap closed = (deployed - naive) / (oracle - naive) per seed. All per 3D volume, "
        f"{ev.ACROSS_SEEDS}.")))

# %%
if ACTIVE:
    fig = chain_figure(at_largest_budget(results), f"{study.title(DOMAIN)}: volume Dice after each stage")
    art.figure(fig, "spleen_chain", caption=(
        "3D Dice after each stage of the deployed spleen pipeline (bar: mean over seeds; dots: seeds) against "
        "the naive localizer (dotted) and the GT-box oracle (dashed)."))
    plt.show()

# %% [markdown]
# ## Three best and three worst slices (seed of the first run)

# %%
if ACTIVE:
    fig = gallery_figure(study.data(DOMAIN).volumes, first["volumes"])
    art.figure(fig, "spleen_examples", caption=(
        f"Ground-truth spleen slices with the highest (top) and lowest (bottom) slice Dice of the deployed "
        f"prediction, seed {study.seeds[0]}: ground truth green, prediction red. Scores above are per volume."))
    plt.show()

# %%
art.save()
