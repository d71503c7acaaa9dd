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
# # 06 · Trained networks vs the training-free pipeline
#
# How many labels does a trained network need to match the frozen, training-free pipeline? Two networks are
# trained on the same seeded, nested N-label train splits the other notebooks use (N = the profile's budgets),
# and scored on the same fixed test split: a **U-Net with a ResNet-34 encoder** and a **SegFormer (MiT-B2)**,
# both from segmentation-models-pytorch. ImageNet encoder weights are used only when they are on disk
# (`smp_resnet34_imagenet`, `smp_mit_b2_imagenet` in `data_manifest.yaml`); offline the networks train
# **from scratch**, and every table says which. Training: AdamW on soft Dice + BCE, light augmentation (scale,
# shift, brightness/contrast; flips only where the anatomy has no side, i.e. dermoscopy and endoscopy), a
# validation split carved from the N labels (never the test split) that keeps the best step and stops early.
# CT spleen trains on the N labelled spleen slices plus background slices of the same train volumes, and is
# scored per 3D volume with every slice predicted. A run whose loss turns NaN is stopped and listed as
# failed, never averaged in. Every finished run is saved (curve, rows, and checkpoint where the profile keeps
# them), so a killed sweep resumes where it stopped. nnU-Net runs in the full profile when it is installed.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | full
seeds = [0]          # experiment seeds: the N-label draw, the validation split, initialisation and batch order
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full)
model = None         # None: the profile's model (the pipeline's; the trained networks are listed in the tables)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}

# %%
import time

from IPython.display import display

from frozenseg.baselines import arch_label, baseline_params, failed_runs, run_sweep
from frozenseg.baselines.nnunet import nnunet_available
from frozenseg.baselines.summary import (bold_leads, curve_plot, decoder_per_seed, headline, mark_leads, nn_curves,
                                         panels, pipeline_per_seed)
from frozenseg.baselines.sweep import training_curves
from frozenseg.report import source_study_note
from frozenseg.results import save_results
from frozenseg.study import setup

study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
params = baseline_params(study.profile)
art = study.artifacts("06_trained_baselines")
art.model = f"trained: {', '.join(arch_label(a) for a in params['archs'])}; pipeline: {study.model_label}"
titles = {d: study.title(d) for d in study.domains}
print("baseline settings:", params)
size_note = (f"Profile {study.profile.name}: {params['steps']} AdamW steps at most (batch {params['batch_size']}, "
             f"lr {params['lr']:g}, early stopping every {params['eval_every']} steps), images resized to "
             f"{params['image_side']} px")
print(size_note)

# %% [markdown]
# ## Run the sweep (finished runs are read back, not retrained)

# %%
t0 = time.perf_counter()
results = run_sweep(study, params)
print(f"sweep: {time.perf_counter() - t0:.1f} s")
save_results(results, "06_trained_baselines", study.profile.name)
results.groupby(["domain", "arch", "init", "unit"]).size().rename("rows").to_frame()

# %% [markdown]
# ## Dice vs N per domain and network

# %%
curves = nn_curves(results)
table = curves.assign(domain=curves.domain.map(titles), arch=curves.arch.map(arch_label))
art.table(table.round(3), "dice_vs_n", caption=(
    f"Test Dice of each trained network at each N: mean and sd across seeds of the per-seed mean over test cases "
    f"(spleen per 3D volume). 'init' says from scratch or pretrained. {size_note}; the full profile trains the "
    "study's settings. Failed runs are excluded and listed below."))
display(table.round(3))
failed = failed_runs(results)
art.table(failed, "failed_runs", caption="Runs stopped because the loss became NaN or infinite (not averaged in).")
print(f"{len(failed)} failed run(s)")

# %% [markdown]
# ## Headline: best trained network per N vs the training-free pipeline vs the tuned decoder
#
# The pipeline column is the deployed stage of notebooks 02–05 (read from their results files; 'pending' where
# a domain's notebook has not run), the tuned-decoder columns come from notebook 07 at its largest N (the
# runner runs 02–05 and 07 before this notebook). A cell where the pipeline leads the best network is bold
# here and marked ★ in the report. The last column interpolates (linearly in log N) the N at which each
# seed's best network reaches the pipeline, mean ± sd across seeds, or '> max N' when it never does.

# %%
pipeline, origin = pipeline_per_seed(study.profile.name, study.domains)
decoder = decoder_per_seed(study.profile.name)
head, leads = headline(results, pipeline, origin, decoder, titles)
art.table(mark_leads(head, leads), "headline", caption=(
    "Best trained network per domain and N (mean ± sd across seeds; arch and init in brackets) vs the training-free "
    "pipeline's deployed Dice vs the few-shot tuned decoder (GT box and deployable box, notebook 07's largest N). "
    "★ on a network cell: the pipeline beats the best network at that N; on the pipeline cell: it still leads at "
    "the largest N. 'pending': that notebook has not produced results in this profile; "
    f"no number is filled in. {size_note}."))
display(bold_leads(head, leads))
print(art.note(source_study_note("best_trained_nn_n100_dice", titles), name="reference", reference=True))
print(art.note(source_study_note("training_free_pipeline_dice", titles), name="reference_pipeline", reference=True))

# %% [markdown]
# ## Data-efficiency panels

# %%
fig = panels(results, pipeline, titles)
art.figure(fig, "data_efficiency", caption=(
    "Test Dice vs labelled images N (log scale) per trained network (band: ± sd across seeds), the training-free "
    "pipeline as a flat dashed line (grey band: its sd across seeds), shaded red where the pipeline leads the best "
    f"network; the label gives the margin at the largest N. {size_note}."))

# %% [markdown]
# ## Training curves
#
# Validation Dice at each evaluation of every run (U-Net blue, SegFormer orange): how far from convergence the
# profile's step budget leaves the networks, and where early stopping kept the weights.

# %%
tc = training_curves(study)
if len(tc):
    tc = tc[tc.domain.isin(study.domains) & tc.seed.isin(study.seeds)]
    art.figure(curve_plot(tc, titles), "training_curves", caption=(
        f"Validation Dice (on the split carved from the N labels) vs step for every run. {size_note}."))

# %% [markdown]
# ## nnU-Net
#
# nnU-Net plans, preprocesses and trains itself; the adapter (`frozenseg.baselines.nnunet`) writes its raw-data
# layout for one domain, N and seed (`imagesTr/{case}_0000.nii.gz`, `labelsTr/{case}.nii.gz`, `imagesTs/`,
# `dataset.json`; CT volumes keep only the N labelled slices, the rest is nnU-Net's `ignore` label), runs the
# three commands below by subprocess in the full profile when nnU-Net is installed
# (`pip install -e '.[nnunet]'`), and reads the predictions back into these tables (arch `nnunet`). By hand:
#
# ```bash
# python -c "from frozenseg.study import setup; from frozenseg.baselines.nnunet import write_dataset; \
#   write_dataset(setup('full', domains=['isic']), 'isic', 25, 0, (10, 25, 50, 100), 'nnunet/raw')"
# export nnUNet_raw=nnunet/raw nnUNet_preprocessed=nnunet/preprocessed nnUNet_results=nnunet/results
# nnUNetv2_plan_and_preprocess -d 520 -c 2d --verify_dataset_integrity
# nnUNetv2_train 520 2d 0 -tr nnUNetTrainer --npz
# nnUNetv2_predict -i nnunet/raw/Dataset520_frozenseg_isic_n25_s0/imagesTs -o nnunet/predictions/Dataset520_frozenseg_isic_n25_s0 -d 520 -c 2d -f 0 -tr nnUNetTrainer
# ```

# %%
state = ("ran" if params["nnunet"] and nnunet_available() else
         "installed, off in this profile" if nnunet_available() else "not installed")
print(art.note(f"nnU-Net: {state} (profile {study.profile.name}); its rows appear in the tables above only when "
               "it ran. The adapter's files are covered by tests/test_baselines.py.", name="nnunet"))

# %%
art.save()
