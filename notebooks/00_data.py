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
# # 00 · Data: the four domains, their splits and what makes each hard
#
# The study runs on four domains: dermoscopy (ISIC 2018), CT spleen (MSD Task09), endoscopy polyps
# (Kvasir-SEG) and chest X-ray (Montgomery + Shenzhen). Real copies are used when present under
# `FROZENSEG_DATA` (see `data_manifest.yaml`); the embedded default is a set of procedural **phantoms**
# built to show the same failure modes. This notebook prints a card per domain and shows examples with
# the ground truth outlined in green. The test split is fixed by the profile's data seed; the
# experiment seeds vary the N-label draws from the train pool.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | full
seeds = [0]          # experiment seeds (do not change the fixed test split)
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source
model = None         # None: the profile's model (only named in provenance here)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}

# %%
from IPython.display import display

import frozenseg.viz as viz
from frozenseg import evaluation as ev
from frozenseg.experiments.data import cards_table, failure_modes, pick_examples
from frozenseg.study import setup

study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
art = study.artifacts("00_data")
titles = {d: study.title(d) for d in study.domains}
datas = {d: study.data(d) for d in study.domains}

# %% [markdown]
# ## Dataset cards

# %%
cards = cards_table(datas, titles, {d: study.source_detail(d) for d in study.domains})
art.table(cards, "cards", caption=(
    "Per domain: data source, train pool (the largest N budget), fixed test split and how it was made, image "
    "size, foreground fraction, and the test negatives: test units without a target (images with an empty mask; "
    f"for spleen, test volumes without spleen), kept and scored by one rule: {ev.EMPTY_RULE}. Spleen is loaded as "
    "volumes; its test cases are every slice of the test volumes (spleen-free slices included) and it is scored "
    "per volume. Numbers on real samples describe the samples, not the study's datasets; silver labels are a "
    "segmentation model's output."))
display(cards)

# %% [markdown]
# ## What makes each domain hard (as built into the data)

# %%
print(art.note(failure_modes(datas, titles), name="failure_modes"))

# %% [markdown]
# ## Examples (ground truth in green)

# %%
fig = viz.example_grid({d: pick_examples(datas[d]) for d in study.domains}, n=4, titles=titles)
art.figure(fig, "examples", caption="Four test cases per domain, ground-truth outline in green.")

# %%
art.save()
