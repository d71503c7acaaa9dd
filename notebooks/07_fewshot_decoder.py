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
# # 07 · Few-shot decoder tuning: how far do N labels move the frozen decoder?
#
# The image encoder and the prompt encoder stay frozen; only a **copy** of the ~4M-parameter mask decoder
# is trained, on the cached embeddings of the N-label train split (each image is encoded once, never per
# epoch). The loss is soft Dice + BCE on the decoder's low-resolution logits against the ground truth
# mapped into the model's frame (resize-longest + pad; padding is ignored). AdamW; a validation split
# carved from the N labels (never the test split) picks the best epoch and stops early, and the untuned
# decoder counts as epoch 0, so tuning is only kept when it helps on validation. A run whose loss turns
# NaN or infinite is stopped and recorded as failed; it is listed, never averaged in.
#
# Three arms, each tuned on the boxes it is prompted with at test time:
# - **GT box (oracle)**: every image is prompted with its own ground-truth box (an image without a target, a
#   2D negative or an organ-free CT slice, has none and is predicted empty).
# - **Domain localizer (GT-free, deployable)**: the box of the localizer of the route the pipeline fits for the
#   domain (notebooks 02–05), fitted on the same N labels, genome included; spleen's is the volume-prior box of
#   each slice. Which localizer each domain got is printed below the table, read from the rows. The labelled
#   images are boxed by a localizer fitted without them (leave one out), so the decoder is tuned on the boxes it
#   would really get.
# - **Mean train box (GT-free)**: the static few-shot box, the mean of the N train GT boxes in normalised image
#   coordinates, the same box for every test image: the simplest GT-free box there is.
#
# The frozen decoder prompted with the same boxes is the baseline. Every arm predicts the same test units: the
# fixed test split (images without a target included, scored at each image file's own size), and for spleen
# every slice of each test volume, scored per 3D volume (a box on an organ-free slice is a false positive that
# counts). 'labels used' says how many labelled images each row saw.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | full
seeds = [0]          # experiment seeds: the N-label draw, the validation split and the tuning order
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full)
model = None         # None: the profile's model (litemedsam for smoke/cpu)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}

# %%
from IPython.display import display

from frozenseg import evaluation as ev
from frozenseg.experiments.fewshot import (fewshot_curves, fewshot_params, fewshot_plot, localizer_note, run_fewshot,
                                          runs_table, summarize_fewshot)
from frozenseg.report import source_study_note
from frozenseg.results import save_results
from frozenseg.study import setup

study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
art = study.artifacts("07_fewshot_decoder")
titles = {d: study.title(d) for d in study.domains}
params = fewshot_params(study.profile)
print("few-shot settings:", params)

# %% [markdown]
# ## Run: tune both arms at every N, score frozen and tuned decoders on the fixed test split

# %%
results = run_fewshot(study)
save_results(results, "07_fewshot_decoder", study.profile.name)
results.groupby(["domain", "unit"]).size().rename("rows").to_frame()

# %% [markdown]
# ## Frozen vs tuned decoder per domain and N

# %%
table = summarize_fewshot(results, titles)
art.table(table, "fewshot_dice", caption=(
    "Test Dice of the frozen and the few-shot tuned mask decoder, prompted with the GT box (oracle), the domain's "
    "own GT-free localizer (fitted on the same N labels) or the mean train box (GT-free). "
    f"{ev.ACROSS_SEEDS[0].upper()}{ev.ACROSS_SEEDS[1:]}, over test units; spleen per 3D volume over every slice. "
    f"{ev.EMPTY_RULE[0].upper()}{ev.EMPTY_RULE[1:]} (the GT-box arm predicts nothing there). The frozen GT-box "
    "decoder uses no labels, so its value repeats across N. Failed runs are counted, never averaged in."))
display(table)
print(art.note(localizer_note(results, titles), name="localizers"))
print(art.note(source_study_note("fewshot_decoder_n100_gt_box_dice", titles), name="reference", reference=True))

# %% [markdown]
# ## Dice vs N

# %%
fig = fewshot_plot(fewshot_curves(results), titles)
art.figure(fig, "dice_vs_n", caption=(
    "Test Dice vs labelled images N: tuned decoder solid, frozen decoder dashed; GT-box arm blue, domain localizer "
    f"orange, mean train box green. Points and error bars: {ev.ACROSS_SEEDS}."))

# %% [markdown]
# ## The tuning runs
#
# One row per run: labels used, train and validation sizes carved from them, epochs trained before early
# stopping, the epoch kept (0 = the untuned decoder was best on validation) and wall time.

# %%
runs = runs_table(results, titles)
art.table(runs, "runs", caption="Every tuning run: labels used, status, split sizes, epochs run, best epoch, seconds.")
display(runs)

# %%
art.save()
