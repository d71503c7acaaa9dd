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
# # 13 · Annotate your own collection: what the uncertainty queue buys
#
# `python -m frozenseg annotate FOLDER` (README, "Annotate your own images") takes a folder of images and the masks
# of a few, chooses a route by cross-validation on those labels, writes a mask for every other image, and queues
# the ones whose masks look least certain (HUE) for a person to correct; the next run refits on every label. Here
# that command runs round after round on a collection made from one domain's data, with a **simulated annotator**:
# the queued images get their own ground-truth masks. Against it, the same loop where the annotator corrects
# images in random order (the seeded label draw's order, the same budget). The collection holds the label pool
# and the held-out test units; the annotator never labels a held-out unit, so their Dice compares the two
# strategies on the same images every round. Dice on the pool's still-unlabelled rest is shown too: the queue
# removes the hardest images from it, so that curve flatters the uncertainty queue. Each seed draws its own start
# set; round 0 is shared by both strategies.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | sample | full
seeds = [0]          # the study's seeds (unused here: the loop runs over `loop_seeds`)
loop_seeds = None    # None: the profile's (three in cpu and sample); each draws its own start set and order
domains = None       # None: Kvasir (DOMAIN below); or one 2D domain, e.g. ["isic"]
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full)
model = None         # None: the profile's model (litemedsam for smoke/cpu)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}

# %%
import matplotlib.pyplot as plt

from frozenseg.experiments import annotate_loop as loop, annotate_report as rep
from frozenseg.results import save_results
from frozenseg.study import setup

DOMAIN = "kvasir"     # the collection's domain (`domains` picks another 2D domain)
params = loop.profile_params(profile)
spec = loop.loop_spec({**params, "domain": DOMAIN}, domains)
study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
art = study.artifacts(loop.NOTEBOOK)
loop_seeds = list(loop_seeds if loop_seeds is not None else params["seeds"])
print(art.note(rep.setting_note(study, spec, loop_seeds)))

# %% [markdown]
# ## The loops
#
# Each round is one run of the command on the seed's folder (under the cache folder, never in the repository);
# each finished round is recorded, so an interrupted run resumes after it.

# %%
df = loop.run_domain(study, spec, loop_seeds, loop.work_root(study.profile.name))
save_results(df, loop.NOTEBOOK, study.profile.name)
curves = loop.curve_table(df)
gain = loop.gain_table(df)

# %% [markdown]
# ## Dice after each round: uncertainty queue against random choice

# %%
fig = rep.curve_figure(curves, rep.figure_title(study, spec, loop_seeds))
art.figure(fig, "curves", caption=rep.curve_caption(study, spec, loop_seeds, curves))
plt.show()

# %%
art.table(rep.curve_report(curves), "curves", caption=rep.curve_caption(study, spec, loop_seeds, curves),
          float_format="{:.3f}")

# %%
art.table(rep.gain_report(gain), "gain", caption=rep.gain_caption(study, spec, loop_seeds))
print(art.note(rep.gain_note(gain)))

# %% [markdown]
# ## The command's own record: route chosen and cross-validated Dice per round, and its time

# %%
art.table(rep.round_table(df), "rounds", caption=rep.round_caption(study, spec), float_format="{:.3f}")

# %%
art.save()
