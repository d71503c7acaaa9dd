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
# and scored on the same fixed test units: a **U-Net** and a **SegFormer** from segmentation-models-pytorch (the
# study's pair in the full profile; on a 2-core CPU a smaller pair that reaches its validation plateau in the
# time the machine has: the code cell below prints which networks this profile trains, at what size and how).
# ImageNet encoder weights are used only when they are on disk (`smp_*_imagenet` in `data_manifest.yaml`);
# offline the networks train **from scratch**, and every table says which. Training: AdamW on soft Dice + BCE,
# light augmentation (scale, shift, brightness/contrast; flips only where the anatomy has no side, i.e.
# dermoscopy and endoscopy), and a validation split carved from the N labels (never the test split) on which
# the profile's monitored score (`monitor`: validation loss or validation Dice, printed below) decides which
# weights a run keeps and when it stops: the validation curve of every run is shown below. CT spleen trains on
# the N labelled spleen slices plus background slices of the same train volumes (counted in 'labels used'),
# and every method is scored per 3D volume over every slice of each test volume; 2D predictions are scored at
# each image file's own size, and test images without a target count. The pipeline runs at the same budgets
# from the same label draw (notebooks 02-05), so each cell compares methods that saw the same labels; the
# labels each method actually used stand beside its score. "The best trained network" of a cell is the one
# with the highest validation Dice, never the highest test Dice. A run whose loss turns NaN is stopped and listed
# as failed, never averaged in.
# Every finished run is saved (curve, rows, and checkpoint where the profile keeps them), so a killed sweep
# resumes where it stopped; the sweep runs on Dask (a local cluster of worker processes by default,
# `FROZENSEG_SCHEDULER` for a real cluster). nnU-Net runs in the full profile when it is installed.

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

from frozenseg import evaluation as ev
from frozenseg.experiments.baselines import (arch_label, baseline_params, failed_runs, monitor_note, monitored,
                                             nnunet_available, run_sweep, size_caption, training_curves, units_note)
from frozenseg.experiments.baselines_report import (CHOSEN_ON, bold_leads, curve_plot, decoder_per_seed, headline,
                                                    mark_leads, match_table, nn_curves, panels, peers_per_seed,
                                                    pipeline_per_seed, runs_table)
from frozenseg.experiments.peers import caption as peers_caption
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
size_note = size_caption(params)
print(art.note(f"Trained networks in this profile: {size_note}.", name="networks"))

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
print(art.note(units_note(study, params["n_test"], titles), name="test_units"))
curves = nn_curves(results)
table = curves.assign(domain=curves.domain.map(titles), arch=curves.arch.map(arch_label))
art.table(table.round(3), "dice_vs_n", caption=(
    f"Test Dice of each trained network at each N ('mean', 'sd': {ev.ACROSS_SEEDS}; 'units': test units per seed; "
    "spleen per 3D volume; 2D predictions scored at each image file's own size), and 'val_dice', the validation "
    "Dice at the weights each run kept (mean over seeds), on which the best network is chosen. 'init' says from "
    f"scratch or pretrained. {size_note}; the full profile trains the study's settings. Failed runs are excluded "
    "and listed below."))
display(table.round(3))
failed = failed_runs(results)
art.table(failed, "failed_runs", caption="Runs stopped because the loss became NaN or infinite (not averaged in).")
print(f"{len(failed)} failed run(s)")

# %% [markdown]
# ## Headline: best trained network vs the training-free pipeline vs the tuned decoder, at each N
#
# One row per domain and budget N. The best trained network is the arch with the highest validation Dice at that
# N (on the split carved from its N labels), and its test Dice is shown. The pipeline column is the deployed
# stage of notebooks 02–05 at that N (read from their results files; 'pending' where a domain's notebook has not
# run), the tuned-decoder columns come from notebook 07 at the same N ('–' where 07 does not tune at that N), and the
# few-shot SAM peers (PerSAM with one and with N supports, Self-prompting SAM) from notebooks 02, 04 and 05, fitted
# on the same label draw and scored on the same test units ('–' for spleen, whose volume pipeline runs no peer).
# Beside every score: how many of the N labelled train images that method used. A row where the pipeline leads
# the best network is bold here and marked ★ in the report.

# %%
pipeline, origin = pipeline_per_seed(study.profile.name, study.domains)
decoder = decoder_per_seed(study.profile.name)
peers = peers_per_seed(study.profile.name, study.domains)
head, leads = headline(results, pipeline, origin, decoder, titles, peers=peers)
art.table(mark_leads(head, leads), "headline", caption=(
    f"Per domain and label budget N: the best trained network ({CHOSEN_ON}; arch and init in brackets), "
    "the training-free pipeline's deployed Dice, and the few-shot tuned decoder prompted by the domain's GT-free "
    "localizer and by the GT box, each with the labels it used (the pipeline's route uses its supports and genome "
    "cases, a subset of the same N-label draw; spleen's networks also see background slices of the labelled "
    "volumes). Same test units for every method (spleen: every slice of each test volume, scored per volume). "
    f"Every score: {ev.ACROSS_SEEDS}. ★: the pipeline beats the best network at that N. 'pending': that notebook "
    f"has not produced results in this profile; no number is filled in. {size_note}. {peers_caption(study.model_key, study.model_label)}"))
display(bold_leads(head, leads))
match = match_table(results, pipeline, origin, titles)
art.table(match, "match_n", caption=(
    "Where the pipeline leads the best network (chosen per N on validation Dice), and the N at which the best "
    "network's curve meets the pipeline's own curve (per seed, with the network chosen on that seed's validation "
    f"Dice, linear in log N between budgets on the difference of the two; {ev.ACROSS_SEEDS}; '≤ N' when the network "
    f"is level from the smallest budget, '> N' when it never gets there). {size_note}."))
display(match)
print(art.note(source_study_note("best_trained_nn_n100_dice", titles), name="reference", reference=True))
print(art.note(source_study_note("training_free_pipeline_dice", titles), name="reference_pipeline", reference=True))

# %% [markdown]
# ## Data-efficiency panels

# %%
fig = panels(results, pipeline, titles)
art.figure(fig, "data_efficiency", caption=(
    "Test Dice vs labelled images N (log scale) per trained network (line and band: " + ev.ACROSS_SEEDS + ") and "
    "the training-free pipeline's own curve at the same budgets (black dashed; the number at each point is how many "
    "labels it used), shaded red where the pipeline leads the best network (the arch with the highest validation "
    f"Dice at that N). {size_note}."))

# %% [markdown]
# ## Training curves and runs
#
# Validation Dice at each evaluation of every run, per domain and network, one line per N: training stops once
# the monitored validation score has stopped improving (the plateau), and the dot marks the step whose weights
# the run kept.

# %%
tc = training_curves(study)
if len(tc):
    tc = tc[tc.domain.isin(study.domains) & tc.seed.isin(study.seeds) & tc.arch.isin(params["archs"])]
    art.figure(curve_plot(tc, results, titles), "training_curves", caption=(
        "Validation Dice (on the split carved from the N labels) vs step for every run; dot: the step whose weights "
        f"the run kept ('best_step', {monitor_note(params)}). {size_note}."))
runs = runs_table(results, titles)
art.table(runs, "runs", caption=(
    "Every training run: labels used, steps run, the step kept ('best_step') and its validation Dice ('val_dice'), "
    f"and what ended it: 'plateau' = early stopping after the {monitored(params)} stopped improving, "
    "'step budget' = the profile's step cap."))
display(runs)
print(f"{(runs.stop == 'plateau').sum()} of {len(runs)} run(s) stopped at their validation plateau")

# %% [markdown]
# ## nnU-Net
#
# nnU-Net plans, preprocesses and trains itself; the adapter (`frozenseg.baselines.nnunet`) writes its raw-data
# layout (`imagesTr/{case}_0000.nii.gz`, `labelsTr/{case}.nii.gz`, `imagesTs/`, `dataset.json`; CT volumes keep
# only the N labelled slices, the rest is nnU-Net's `ignore` label) for the cases of one domain, N and seed that
# `frozenseg.experiments.baselines.write_dataset` picks (the networks' own N-label draw and test units), runs the
# three commands below by subprocess in the full profile when nnU-Net is installed
# (`pip install -e '.[nnunet]'`), and reads the predictions back into these tables (arch `nnunet`). By hand:
#
# ```bash
# python -c "from frozenseg.study import setup; from frozenseg.experiments.baselines import write_dataset; \
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
