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
# # 12 · Gallery: the best and worst cases of each domain
#
# For each domain, the `n_show` test units with the highest and those with the lowest Dice of the **deployed**
# training-free pipeline mask, read from the results files and saved masks of notebooks 02 (ISIC), 03 (spleen),
# 04 (Kvasir) and 05 (CXR); nothing is recomputed here. Ground truth is outlined in green, the prediction in red,
# the Dice in each title. A spleen case is a whole CT volume scored in 3D: the panel shows the slice with the
# largest ground-truth area and the title gives the volume Dice. A domain whose notebook has not run yet gets a
# note saying which notebook to run.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | full
seeds = [0]          # the gallery shows the first seed's deployed masks
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full)
model = None         # None: the profile's model (litemedsam for smoke/cpu)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}
n_show = 3           # best and worst cases per domain

# %%
import matplotlib.pyplot as plt

from frozenseg import viz
from frozenseg.experiments.gallery import failure_caption, failure_summary, gallery
from frozenseg.study import setup

study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
art = study.artifacts("12_gallery")
titles = {d: study.title(d) for d in study.domains}
seed = study.seeds[0]

# %%
panels, notes = gallery(study.domains, study.profile.name, seed, study.data, n=n_show, titles=titles)
for text in notes:
    print(art.note(text))

# %%
if panels:
    fig = viz.case_gallery(panels)
    art.figure(fig, "best_worst", caption=(
        f"Per domain, the {n_show} best (upper row) and {n_show} worst (lower row) test cases by Dice of the deployed "
        f"training-free pipeline mask, seed {seed}, from the results of notebooks 02–05: ground truth green, "
        "prediction red. Spleen: the slice of largest ground-truth area of each volume, titled with the 3D volume "
        "Dice. With fewer than twice as many test cases as panels the two rows share cases."))
    plt.show()
else:
    print(art.note("No domain has pipeline results in this profile yet; run notebooks 02–05 first."))

# %% [markdown]
# ## What limits the worst cases
#
# Every deployed test unit of each domain against the GT-box oracle on the same unit: where the frozen decoder
# itself fails (the oracle is low too), where the localizer prompted the wrong place, where it was partly off, and
# where it came close to the oracle. The share of the oracle gap each class accounts for says which one to fix.

# %%
fails = failure_summary(study.domains, study.profile.name, seed, titles)
if len(fails):
    sources = "; ".join(f"{titles[d]}: {study.source_detail(d)}" for d in study.domains)
    art.table(fails, "failures", caption=failure_caption(study.profile.name, seed, sources), float_format="{:.3f}")
else:
    print(art.note("No domain has pipeline results in this profile yet; run notebooks 02–05 first."))

# %%
art.save()
