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
# # 01 · Frozen oracles: how good is the decoder when the box is perfect?
#
# Each test image is encoded once by the frozen model (cached on disk) and prompted with its
# **ground-truth box**. That Dice is the decoder's ceiling: whatever a GT-free pipeline loses below it
# is localization error, not decoder error. We then perturb the box, jittering its edges and loosening
# it, to draw the *localization-sensitivity curve* that motivates the whole study. Spleen is scored
# per volume in 3D (slices are assembled; a slice-average would bias Dice), the other domains per image at the
# ground truth's native resolution. An image without a target has no GT box: the oracle predicts nothing there.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | full
seeds = [0]          # experiment seeds: box jitter draws (the GT-box oracle itself is deterministic)
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full)
model = None         # None: the profile's model (litemedsam for smoke/cpu)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}

# %%
from IPython.display import display

import frozenseg.viz as viz
from frozenseg import evaluation as ev
from frozenseg.experiments.oracle import run_oracle, sensitivity_summary, summarize_oracle
from frozenseg.report import source_study_note
from frozenseg.results import save_results
from frozenseg.study import setup

study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
art = study.artifacts("01_frozen_oracle")
titles = {d: study.title(d) for d in study.domains}

# %% [markdown]
# ## Run: GT box, jittered boxes and loosened boxes through the frozen decoder

# %%
results = run_oracle(study)
save_results(results, "01_frozen_oracle", study.profile.name)
results.groupby(["domain", "unit"]).size().rename("rows").to_frame()

# %% [markdown]
# ## The decoder ceiling per domain

# %%
table = summarize_oracle(results, titles)
art.table(table, "oracle_dice", caption=(
    "Frozen decoder prompted with the ground-truth box (the oracle), and with the loosest and most-jittered "
    f"boxes of the sweep: Dice {ev.ACROSS_SEEDS}, over each domain's test units (spleen per 3D volume; 2D images "
    "scored at the ground truth's native resolution). Median HD95 in mm where the data has a spacing (volumes), "
    "else in native pixels, with the units that had no boundary to measure. 'negatives': test units without a "
    f"target; every box arm predicts an empty mask there (no GT box), and {ev.EMPTY_RULE}."))
display(table)
print(art.note(source_study_note("frozen_gt_box_oracle_dice", titles), name="reference", reference=True))

# %% [markdown]
# ## Localization sensitivity: Dice as the box degrades

# %%
curves = sensitivity_summary(results)
fig = viz.sensitivity_plot(curves, titles)
art.figure(fig, "sensitivity", caption=(
    "Dice of the frozen decoder as the GT box's edges are jittered (left) or the box is scaled about its centre "
    f"(right): {ev.ACROSS_SEEDS}; band: that sd (visible with several seeds). Test units without a target score "
    "the same at every level (no box to perturb). Localization is the whole game."))

# %%
art.save()
