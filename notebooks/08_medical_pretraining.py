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
# # 08 · Medical pretraining: generic SAM vs MedSAM, each frozen and few-shot tuned
#
# Does medical pretraining help a promptable decoder, and does it still matter after a few-shot tune? The
# comparison the study asks for holds the architecture fixed (ViT-B): **SAM ViT-B** (generic, natural-image
# pretraining) vs **MedSAM ViT-B** (SAM fine-tuned on medical images), each used frozen with the GT box and
# with its mask decoder few-shot tuned on the N-label split (notebook 07's method and settings, GT-box arm, so
# localization plays no part). Each model runs only when its weights are on disk (`sam_vit_b`, `medsam_vit_b` in
# `data_manifest.yaml`). With the embedded default only **LiteMedSAM** (medical, MedSAM-distilled TinyViT) is
# present: this notebook then shows LiteMedSAM frozen vs tuned and says which columns need weights; no column
# is filled in for a model that did not run. LiteMedSAM's rows are reused from notebook 07 when it ran with the
# same profile, seeds and budgets (the runner runs 07 first), so nothing is tuned twice.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | full
seeds = [0]          # experiment seeds: the N-label draw, the validation split and the tuning order
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full)
model = None         # None: the profile's model (every candidate whose weights are present runs regardless)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}

# %%
from IPython.display import display

from frozenseg import evaluation as ev
from frozenseg.experiments.pretraining import (absent_note, fewshot_params, model_status, pretraining_plot,
                                               pretraining_table, run_pretraining)
from frozenseg.report import source_study_note
from frozenseg.results import save_results
from frozenseg.study import setup

study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
art = study.artifacts("08_medical_pretraining")
titles = {d: study.title(d) for d in study.domains}
params = fewshot_params(study.profile)
status = model_status()
art.model = "; ".join(status[status.present].label)
print("few-shot settings:", params)
display(status)

# %% [markdown]
# ## Which models can run

# %%
art.table(status, "models", caption=(
    "Candidate models for the pretraining comparison: pretraining kind and whether the weights are on disk "
    "(absent ones are not run and get no column)."))
print(art.note(absent_note(status), name="absent"))

# %% [markdown]
# ## Run: frozen and tuned decoder of every present model, GT-box prompts

# %%
results = run_pretraining(study, params, status)
save_results(results, "08_medical_pretraining", study.profile.name)
results.groupby(["model", "domain", "unit"]).size().rename("rows").to_frame()

# %% [markdown]
# ## Frozen vs tuned per model

# %%
table = pretraining_table(results, status, titles)
art.table(table, "frozen_vs_tuned", caption=(
    "Test Dice with GT-box prompts of each present model's frozen and few-shot tuned mask decoder (largest N of "
    f"the profile), {ev.ACROSS_SEEDS}; spleen per 3D volume, 2D images at their files' own size, images without a "
    "target included. Models whose weights are absent have no column. "
    f"Tuning settings: {params['epochs']} epochs at most, early stopping on a split of the N labels."))
display(table)
print(art.note(source_study_note("fewshot_decoder_n100_gt_box_dice", titles), name="reference", reference=True))

# %%
fig = pretraining_plot(results, status, titles)
art.figure(fig, "frozen_vs_tuned", caption=(
    "Frozen (light) and tuned (dark) decoder Dice per present model and domain, GT-box prompts (largest N); bars "
    f"and error bars: {ev.ACROSS_SEEDS}."))

# %%
art.save()
