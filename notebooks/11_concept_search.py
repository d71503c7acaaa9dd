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
# # 11 · Concept search (Mask to Concept): learn the prompt, then let uncertainty pick what to label
#
# The localizer pipelines find a box for the frozen decoder. Mask to Concept (M2C) asks a different
# question: can the *prompt itself* be learned from a few labelled images, with no localizer at all?
# A concept of k prompt tokens is fed to the frozen prompt encoder / mask decoder in place of a box and
# optimised (AdamW, cosine schedule, focal + Dice loss) against the labelled masks, on cached image
# embeddings; nothing in the model changes. **HUE** (Hybrid Uncertainty Estimation) re-prompts the model
# with the box of the concept's own mask: U = (1 − IoU(concept mask, box mask)) + mean binary entropy over
# uncertain pixels (0.05 < p < 0.95), and U = 2 for an empty concept mask. The **annotation loop** starts
# from 1 or 5 labelled images, sends the k most uncertain unlabelled images to an annotator (simulated here
# with the ground truth) each round, and refits warm-started; random selection with the same budget is the
# control. The source ran this through SAM3's text pathway; here the default backend is LiteMedSAM's frozen
# decoder (SAM3 is supported through `frozenseg.models.sam3` when its weights are present).

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | full
seeds = [0]          # experiment seeds: concept init, start set and random selection
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full)
model = None         # None: the profile's model (litemedsam for smoke/cpu)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}
concept_backend = "decoder"  # "decoder": the model's frozen LiteMedSAM decoder; "sam3": SAM3's text pathway
                             # (weights: manifest entry sam3 under $FROZENSEG_DATA; fits with the source's lr 5e-4)

# %%
from IPython.display import display

import frozenseg.viz as viz
from frozenseg.concept import compare as cmp
from frozenseg.concept import summary as cs
from frozenseg.concept.experiment import concept_params, gallery_panels, run_concept_study, study_model
from frozenseg.errors import DataError
from frozenseg.results import load_results, save_results
from frozenseg.study import setup

study = setup(profile=profile, seeds=seeds, domains=domains, source=source,
              model=study_model(concept_backend, model), data_root=data_root, folders=folders)
art = study.artifacts("11_concept_search")
titles = {d: study.title(d) for d in study.domains}
params = concept_params(study.profile, concept_backend)
print(f"concept backend: {concept_backend} | concept settings:", params)

# %% [markdown]
# ## Run: every domain, start sizes and selection strategies
#
# Each loop's state is saved after every finished round, so an interrupted run resumes where it stopped.
# Through LiteMedSAM's decoder the learning rate is 0.1 → 1e-3 (`FitSettings()`'s default), not the source's
# 5e-4 → 5e-6: that rate moves the tokens too little in a few dozen single-batch steps and every concept collapses
# to an empty mask (a flagged outcome, measured while building this notebook); the same 100:1 cosine decay. SAM3's
# text pathway keeps the source's rate (`SAM3_TEXT_SETTINGS`). The first fit of a loop runs `epochs` steps; each
# later, warm-started refit runs `refit_epochs` (printed above).

# %%
results, times, concepts = run_concept_study(study, concept_backend=concept_backend)
save_results(results, "11_concept_search", study.profile.name)
results.groupby(["domain", "split", "unit"]).size().rename("rows").to_frame()

# %% [markdown]
# ## Dice vs labelled images
#
# Test Dice is measured on the held-out test split, which is never corrected, so it carries **no credit**.
# The source's protocol instead scores the annotation pool and counts every human-corrected image as
# Dice 1.0; both pool numbers are shown for the last round. The GT-box oracle from notebook 01 is the
# reference line; the next section compares concept search with the other methods of the study.

# %%
try:
    oracle = load_results("01_frozen_oracle", study.profile.name)
except DataError as exc:
    oracle = None
    print(f"no GT-box oracle reference: {exc}")
ref = cs.oracle_reference(oracle, results)
curves = cs.dice_curves(results)
table = cs.curve_table(curves, titles)
art.table(table, "dice_vs_labels", caption=(
    "Concept search through the frozen decoder: test Dice (mean over the held-out test split; no credit for "
    "corrections; spleen per 3D volume) after each round, by number of labelled images N, for HUE top-k and "
    "random selection with the same budget. Last two columns: Dice over the annotation pool after the last "
    "round, with corrected images counted as 1.0 (the source's protocol) and over uncorrected images only."))
display(table)

# %%
fig = viz.concept_curves(curves, ref, titles)
art.figure(fig, "dice_vs_labels", caption=(
    "Test Dice vs labelled images: HUE top-k (solid) and random (dashed), from 1 (blue) and 5 (orange) "
    "labelled images; dotted: the GT-box oracle of notebook 01 on the same test images, where available."))

# %% [markdown]
# ## Concept search vs the localizer pipelines, the tuned decoder and the oracle
#
# Every method on the same test units (the intersection of what each scored: the fixed test split; spleen every
# slice of each test volume, scored per volume), with the labels it used: the GT-box oracle (notebook 01, no
# labels), the training-free pipeline at each budget N (notebooks 02–05), the few-shot tuned decoder prompted by
# the domain's localizer, the GT box or the mean train box (07), and concept search after each round. The second
# table lines them up at the label counts concept search reached; '–' where a method has no run with exactly
# that many labels (nothing is interpolated).

# %%
cmp_rows = cmp.method_rows(study.profile.name, study.domains, results)
cmp_table = cmp.comparison_table(cmp_rows, titles)
art.table(cmp_table, "vs_methods", caption=(
    "Test Dice (mean ± sd across seeds) of every method on the test units all of them scored, with the number of "
    "labelled train images each used. Methods whose notebook has not run in this profile are absent."))
display(cmp_table)
matched = cmp.matched_table(cmp_rows, titles)
art.table(matched, "vs_methods_matched", caption=(
    "At the label counts concept search reached: its better selection strategy, the training-free pipeline and the "
    "tuned decoder with the domain's localizer at N equal to that count (same test units), and the GT-box oracle. "
    "'–': that method has no run with exactly that many labels in this profile."))
display(matched)
art.figure(cmp.comparison_figure(cmp_rows, titles), "vs_methods", caption=(
    "Test Dice vs labels used, every method on the same test units: concept search (red), the training-free "
    "pipeline (black), the tuned decoder (blue), the GT-box oracle (grey star, 0 labels)."))

# %% [markdown]
# ## Each image keeps its lowest-U round (the source's evaluation mode)
#
# The source evaluates each image with every round's concept and keeps the one with the lowest HUE
# uncertainty U. That choice reads U only, never the ground truth, so it is a fair (GT-free) test-time
# ensemble over rounds. It is reported beside the plain last-round Dice; ties go to the later round.

# %%
low_tab = cs.lowest_u_table(results, curves, titles)
art.table(low_tab, "lowest_u", caption=(
    "Test Dice at the last round: the last round's concept on every image, vs each image segmented by whichever "
    "round's concept gave it the lowest HUE uncertainty U (selection uses U only; spleen per 3D volume, slices "
    "picking independently). Last column: share of test images (spleen: slices) whose lowest-U round is earlier."))
display(low_tab)

# %% [markdown]
# ## Does U rank true Dice?
#
# A useful uncertainty is high where Dice is low, so a negative Spearman rho is what HUE needs. The interval
# is a seeded percentile bootstrap over images (HUE loops, last round, all start sizes and seeds pooled).

# %%
corr = cs.correlation_table(results, params["n_boot"], titles)
art.table(corr, "u_vs_dice", caption=(
    "Spearman rank correlation of HUE uncertainty U with true Dice per domain, over test images at the last "
    "round of the HUE loops, with a 95% bootstrap interval; negative means U ranks bad masks first."))
display(corr)
rho = {d: r for d, r in zip(study.domains, corr["Spearman rho (U vs Dice)"])} if len(corr) else {}
fig = viz.uncertainty_scatter(cs.uncertainty_rows(results).query("strategy == 'hue'"), titles, rho)
art.figure(fig, "u_vs_dice", caption="HUE uncertainty U vs true Dice, one point per test image (U = 2: empty mask).")

# %% [markdown]
# ## Flagged outcomes and timings
#
# A concept that predicts an empty mask on every support image is flagged `concept_collapsed` (its Dice of 0
# is a real outcome, not a missing value); a fit on a single image is flagged `single_support`.

# %%
flags = cs.flag_table(results)
art.table(flags, "flags", caption="Rounds whose concept was flagged, per domain, start size and selection.")
display(flags)
tt = cs.timing_table(times, titles)
art.table(tt, "timings", caption=(
    "Wall seconds on this machine: the start fit (shared by both strategies) and each loop's remaining rounds "
    "(fits, HUE scoring of the pool, test predictions)."))
display(tt)

# %% [markdown]
# ## Gallery: most and least uncertain test images
#
# Green: ground truth; red: the final HUE concept's prediction (largest start size, first seed).

# %%
fig = viz.case_gallery(gallery_panels(study, results, concepts, n=3))
art.figure(fig, "gallery", caption=(
    "Per domain, the three most (top) and least (bottom) uncertain test images by HUE U, ground truth green, "
    "concept prediction red, with U and true Dice."))

# %%
art.save()
