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
# # 02 · ISIC (dermoscopy): polygon drawer + genome, zero gradient training
#
# The lesion is localized by a **polygon drawer**: an LLM vision endpoint when one is configured
# (`FROZENSEG_LLM_URL`, responses recorded as replayable traces), otherwise the GT-free **heuristic**
# backend (pigment saliency away from the image border). Its box goes through the frozen decoder, then
# GT-free skills run under a keep-best gate. A 5-8 parameter **genome** (drawer threshold and dilation, box
# margin, re-prompt margin, gate weights) is fit on at most 40 labelled *train* images by a derivative-free
# optimiser; the test split is never seen. The ablation reads Dice after each stage of one run.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | full
seeds = [0]          # experiment seeds: which train images are the support and genome labels
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full)
model = None         # None: the profile's model (litemedsam for smoke/cpu)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}
drawer_backend = None  # None: the route's own (heuristic); "llm": FROZENSEG_LLM_URL, _KEY, _MODEL, replies recorded;
                       # "replay": rerun from recorded traces only (FROZENSEG_LLM_MODEL names their model)

# %%
from frozenseg.pipeline.router import get_route, with_localizer
from frozenseg.pipeline.section import run_section
from frozenseg.study import setup

DOMAIN = "isic"
study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
route = with_localizer(get_route(DOMAIN), backend=drawer_backend)   # checked here: a missing endpoint fails now
art = study.artifacts("02_isic")

# %% [markdown]
# ## Route, genome, skill-by-skill ablation and the oracle gap closed

# %%
if DOMAIN in study.domains:
    results = run_section(study, DOMAIN, "02_isic", art, route=route)
else:
    art.note(f"{DOMAIN} is not among this run's domains ({study.domains}); nothing to show.")

# %%
art.save()
