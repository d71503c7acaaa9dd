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
# uncertain pixels, with a fixed U for an empty concept mask (both printed below). The **annotation loop**
# starts from a few labelled images, sends the k most uncertain unlabelled images to an annotator (simulated
# here with the ground truth) each round, and refits warm-started; random selection with the same budget is
# the control. The labels come from the seeded draw the pipeline, the networks and the tuned decoder share:
# the start set is the first images of that draw, and random selection takes the next ones in its order, so
# random selection at L labels uses exactly the L labels the other methods see at N = L. The source ran this
# through SAM3's text pathway; here the default backend is LiteMedSAM's frozen decoder (SAM3 is supported
# through `frozenseg.models.sam3` when its weights are present).

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | full
seeds = [0]          # experiment seeds: concept init, start set and random selection
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full)
model = None         # None: the profile's model (litemedsam for smoke/cpu)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}
concept_backend = None  # "decoder": the model's frozen LiteMedSAM decoder; "sam3": SAM3's text pathway (weights:
                        # manifest entry sam3 under $FROZENSEG_DATA; fits with SAM3_TEXT_SETTINGS); None: the profile's
                        # (decoder, except the rehearsal profile, which runs SAM3)

# %%
from IPython.display import display

import frozenseg.viz as viz
from frozenseg import evaluation as ev
from frozenseg.experiments import concept_report
from frozenseg.experiments.concept_search import (EMPTY_U, P_HI, P_LO, SAM3_TEXT_SETTINGS, FitSettings,
                                                  concept_params, gallery_panels, lr_check, profile_backend,
                                                  run_concept_study, study_model)
from frozenseg.errors import DataError
from frozenseg.results import load_results, save_results
from frozenseg.study import setup

concept_backend = profile_backend(profile, concept_backend)
study = setup(profile=profile, seeds=seeds, domains=domains, source=source,
              model=study_model(concept_backend, model), data_root=data_root, folders=folders)
art = study.artifacts("11_concept_search")
titles = {d: study.title(d) for d in study.domains}
params = concept_params(study.profile, concept_backend)
print(f"concept backend: {concept_backend} | concept settings:", params)
pool_text = f"the first {params['pool']} train images" if params["pool"] else "the whole train pool"
print(art.note(f"HUE: the entropy term averages pixels with {P_LO:g} < p < {P_HI:g}; an empty concept mask has "
               f"U = {EMPTY_U:g}. Start sizes {list(params['starts'])}, {params['rounds']} rounds of "
               f"{params['per_round']} images; the pool is {pool_text} of the seeded label draw "
               "(frozenseg.data.splits.subsample_train with the experiment seed).", name="settings"))

# %% [markdown]
# ## Run: every domain, start sizes and selection strategies
#
# Each loop's state is saved after every finished round, so an interrupted run resumes where it stopped.
# The first fit of a loop runs `epochs` steps; each later, warm-started refit runs `refit_epochs` (printed
# above). The learning rate differs from the source's through LiteMedSAM's decoder; the next cell says which
# rates run here, and the `lr_check` table after the run fits both on each domain's start set.

# %%
dec, src = FitSettings(), SAM3_TEXT_SETTINGS
print(art.note(f"Learning rates: through LiteMedSAM's decoder {dec.lr:g} → {dec.lr_min:g} (FitSettings()'s default, "
               f"cosine decay {dec.lr / dec.lr_min:g}:1), not the source's {src.lr:g} → {src.lr_min:g} "
               f"(SAM3_TEXT_SETTINGS, {src.lr / src.lr_min:g}:1); SAM3's text pathway keeps the source's rate. This "
               f"run ({concept_backend}): {params['lr']:g} → {params['lr_min']:g}. Whether the source's rate "
               "collapses the concepts here (an empty mask on every support image, flagged `concept_collapsed`) is "
               "shown by the `lr_check` table below, on this run's start sets.", name="learning_rate"))

# %%
results, times, concepts = run_concept_study(study, concept_backend=concept_backend)
save_results(results, "11_concept_search", study.profile.name)
display(results.groupby(["domain", "split", "unit"]).size().rename("rows").to_frame())
lrc = lr_check(study, params, study.seeds[0], concept_backend)
art.table(lrc.assign(domain=lrc.domain.map(titles)).round(3), "lr_check", caption=(
    f"The start fit of each domain (the first {max(params['starts'])} images of the label draw, seed "
    f"{study.seeds[0]}, {params['epochs']} epochs) with this study's learning rate and with the source's: the "
    "concept's flag ('concept_collapsed': an empty mask on every support image), its empty masks and its Dice on "
    "those same labelled images (a fit diagnostic, not a test score)."))
display(lrc)

# %% [markdown]
# ## Dice vs labelled images
#
# Test Dice is measured on the held-out test split, which is never corrected, so it carries **no credit**.
# The source's protocol instead scores the annotation pool and counts every human-corrected image as a
# perfect Dice; both pool numbers are shown for the last round. The GT-box oracle from notebook 01 is the
# reference line; the next section compares concept search with the other methods of the study.

# %%
try:
    oracle = load_results("01_frozen_oracle", study.profile.name)
except DataError as exc:
    oracle = None
    print(f"no GT-box oracle reference: {exc}")
ref = concept_report.oracle_reference(oracle, results)
curves = concept_report.dice_curves(results)
table = concept_report.curve_table(curves, titles)
art.table(table, "dice_vs_labels", caption=(
    "Concept search through the frozen decoder: test Dice (over the held-out test split, negatives by the empty "
    f"rule; no credit for corrections; spleen per 3D volume; {ev.ACROSS_SEEDS}) after each round, by number of "
    "labelled images N, for HUE top-k and random selection with the same budget. Last two columns: Dice over the "
    "annotation pool after the last round, with corrected images counted as a perfect Dice (the source's "
    "protocol) and over uncorrected images only."))
display(table)

# %%
fig = concept_report.concept_curves(curves, ref, titles)
starts = sorted(params["starts"])
art.figure(fig, "dice_vs_labels", caption=(
    f"Test Dice vs labelled images: HUE top-k (solid) and random (dashed), from {starts[0]} labelled image(s) (blue)"
    + (f" and from {', '.join(map(str, starts[1:]))} (orange)" if len(starts) > 1 else "")
    + "; dotted: the GT-box oracle of notebook 01 on the same test units, where available."))

# %% [markdown]
# ## Concept search vs the localizer pipelines, the tuned decoder and the oracle
#
# Every method on the same test units (the intersection of what each scored: the fixed test split; spleen every
# slice of each test volume, scored per volume), with the labels it used: the GT-box oracle (notebook 01, no
# labels), the training-free pipeline at each budget N (notebooks 02–05), the few-shot tuned decoder prompted by
# the domain's localizer, the GT box or the mean train box (07), and concept search after each round. The second
# table lines them up at the label counts concept search reached, with one column per selection strategy and
# start size: no strategy is picked by its test score. '–' where a method has no run with exactly that many
# labels (nothing is interpolated).

# %%
all_methods = concept_report.method_rows(study.profile.name, study.domains, results)
vs_methods = concept_report.comparison_table(all_methods, titles)
art.table(vs_methods, "vs_methods", caption=(
    f"Test Dice ({ev.ACROSS_SEEDS}) of every method on the test units all of them scored, with the number of "
    "labelled train images each used. Methods whose notebook has not run in this profile are absent."))
display(vs_methods)
matched = concept_report.matched_table(all_methods, titles)
art.table(matched, "vs_methods_matched", caption=(
    "At the label counts concept search reached: every selection strategy and start size of concept search (one "
    "column each; none is chosen by its test score), the training-free pipeline and the tuned decoder with the "
    "domain's localizer at N equal to that count (same test units), and the GT-box oracle; "
    f"{ev.ACROSS_SEEDS}. '–': that method has no run with exactly that many labels in this profile."))
display(matched)
art.figure(concept_report.comparison_figure(all_methods, titles), "vs_methods", caption=(
    "Test Dice vs labels used, every method on the same test units: concept search (red), the training-free "
    "pipeline (black), the tuned decoder (blue), the GT-box oracle (grey star, 0 labels)."))

# %% [markdown]
# ## Each image keeps its lowest-U round (the source's evaluation mode)
#
# The source evaluates each image with every round's concept and keeps the one with the lowest HUE
# uncertainty U. That choice reads U only, never the ground truth, so it is a fair (GT-free) test-time
# ensemble over rounds. It is reported beside the plain last-round Dice; ties go to the later round.

# %%
low_tab = concept_report.lowest_u_table(results, curves, titles)
art.table(low_tab, "lowest_u", caption=(
    f"Test Dice ({ev.ACROSS_SEEDS}) at the last round: the last round's concept on every image, vs each image "
    "segmented by whichever "
    "round's concept gave it the lowest HUE uncertainty U (selection uses U only; spleen per 3D volume, slices "
    "picking independently). Last column: share of test images (spleen: slices) whose lowest-U round is earlier."))
display(low_tab)

# %% [markdown]
# ## Does U rank true Dice?
#
# A useful uncertainty is high where Dice is low, so a negative Spearman rho is what HUE needs. The rows pool
# the HUE loops' last round over start sizes and seeds, so one test image appears several times: the
# bootstrap resamples test units (images; a spleen slice goes with its volume), never rows.

# %%
corr = concept_report.correlation_table(results, params["n_boot"], titles)
art.table(corr.drop(columns=["key", "rho"]), "u_vs_dice", caption=(
    "Spearman rank correlation of HUE uncertainty U with true Dice per domain, over test images at the last "
    "round of the HUE loops (start sizes and seeds pooled); negative means U ranks bad masks first. "
    f"Interval: {ev.interval_note(params['n_boot'])} (spleen: a volume's slices resampled together)."))
display(corr.drop(columns=["key", "rho"]))
rho = dict(zip(corr.key, corr["Spearman rho (U vs Dice) [interval]"])) if len(corr) else {}
hue_rows = concept_report.uncertainty_rows(results).query("strategy == 'hue'")
fig = concept_report.uncertainty_scatter(hue_rows, titles, rho)
art.figure(fig, "u_vs_dice", caption=f"HUE uncertainty U vs true Dice, one point per test image (U = {EMPTY_U:g}: "
           "empty mask).")

# %% [markdown]
# ## Flagged outcomes and timings
#
# A concept that predicts an empty mask on every support image is flagged `concept_collapsed` (its Dice of 0
# is a real outcome, not a missing value); a fit on a single image is flagged `single_support`.

# %%
flags = concept_report.flag_table(results)
art.table(flags, "flags", caption=("Rounds whose concept was flagged, per domain, start size and selection "
                                   f"(learning rate {params['lr']:g} → {params['lr_min']:g})."))
display(flags)
tt = concept_report.timing_table(times, titles)
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
