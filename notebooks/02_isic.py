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
# # 02 · ISIC (dermoscopy): dense-correspondence label transfer + genome, zero gradient training
#
# The lesion is localized by **dense correspondence** (CPG, as for Kvasir): each labelled support image's mask is
# transferred to the query through the cosine similarity of every query patch of the frozen encoder to every
# support patch; the peak's component gives the box. Its box goes through the frozen decoder, then GT-free skills
# run under a keep-best gate. A small **genome** (transfer threshold, box margin, re-prompt margin, gate weights)
# is fit leave one out on at most 40 labelled *train* images by a derivative-free optimiser; the test split is
# never seen. The source study's ISIC route was a **polygon drawer** (an LLM vision endpoint, or offline a
# heuristic: pigment saliency against the image border). On the real ISIC sample the heuristic drawer fell far
# behind the correspondence localizer: it boxes the dermoscope's dark vignette corners and edge glare as the most
# salient blobs and misses small low-contrast lesions (its worst cases are shown below). So the deployed route is
# the correspondence one, and the drawer runs beside it as an alternative (route `isic_drawer`; `drawer_backend`
# chooses its backend, and `deploy_drawer=True` deploys it instead).

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | sample | full
seeds = [0]          # experiment seeds: which train images are the support and genome labels
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full, real where present for sample)
model = None         # None: the profile's model (litemedsam for smoke/cpu)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}
drawer_backend = None  # the drawer route's backend. None: its own (heuristic); "llm": FROZENSEG_LLM_URL, _KEY, _MODEL,
                       # replies recorded; "replay": rerun from recorded traces only (FROZENSEG_LLM_MODEL names them)
deploy_drawer = False  # True: deploy the drawer route (with drawer_backend) instead of the correspondence route

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from frozenseg.pipeline.router import get_route, with_localizer
from frozenseg.pipeline.section import alternative_routes, run_section
from frozenseg.study import setup

DOMAIN = "isic"
study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
drawer = with_localizer(get_route("isic_drawer"), backend=drawer_backend)   # checked here: a missing endpoint fails now
deployed, other = (drawer, get_route(DOMAIN)) if deploy_drawer else (get_route(DOMAIN), drawer)
art = study.artifacts("02_isic")

# %% [markdown]
# ## Route, genome, skill-by-skill ablation and the oracle gap closed

# %%
if DOMAIN in study.domains:
    results = run_section(study, DOMAIN, "02_isic", art, route=deployed)
else:
    art.note(f"{DOMAIN} is not among this run's domains ({study.domains}); nothing to show.")

# %% [markdown]
# ## The alternative route on the same test cases, and its worst cases
#
# Both routes fitted the same way at the largest budget (the same supports and genome cases); the worst cases of
# the alternative show what it gets wrong (ground truth green, prediction red, its box yellow).

# %%
if DOMAIN in study.domains:
    table, fig = alternative_routes(study, DOMAIN, [deployed, other], seed=study.seeds[0])
    display(art.table(table, f"{DOMAIN}_routes", caption=(
        f"{study.title(DOMAIN)}: deployed and alternative route at the largest budget, seed {study.seeds[0]}, on the "
        "same test cases: Dice after localization and deployed (mean, and how many test cases fall below 0.5).")))
    art.figure(fig, f"{DOMAIN}_alternative_worst", caption=(
        f"The four worst test cases of the route that is not deployed ({other.localizer['name']}"
        f"{', ' + other.localizer.get('backend', '') if other.localizer.get('backend') else ''}): ground truth "
        "green, prediction red, its box yellow."))
    plt.show()

# %%
art.save()
