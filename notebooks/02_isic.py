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
# # 02 · ISIC (dermoscopy): a route chosen on the labels, zero gradient training
#
# Several GT-free routes are candidates for ISIC. Route `isic` localizes the lesion by **dense correspondence** (CPG,
# as for Kvasir): each labelled support image's mask is transferred to the query through the cosine similarity of
# every query patch of the frozen encoder to every support patch; the peak's component gives the box. Route
# `isic_drawer` is the source study's **polygon drawer** (an LLM vision endpoint, or offline a heuristic: pigment
# saliency against the image border); `concept` is concept search (prompt tokens fitted through the frozen decoder,
# no box). A box goes through the frozen decoder, then GT-free skills run under a keep-best gate, and a small
# **genome** (localizer parameters, box margin, re-prompt margin, gate weights) is fit leave one out on at most 40
# labelled *train* images by a derivative-free optimiser.
#
# **Which route is deployed** is decided by the router's k-fold cross-validation on the labels: at each label
# budget N and seed, the candidates are scored on exactly the labelled train images the pipeline uses at that N
# (each held out once; the finalists refitted with their genome as deployed), and the best one is deployed. The
# choice table below shows those scores and the route chosen per N. The test split is never seen by the choice nor
# by the genome fit. `drawer_backend` sets the drawer's backend; `deploy_drawer=True` deploys the drawer without a
# choice (a user override, which the choice table then says).

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | sample | full
seeds = [0]          # experiment seeds: which train images are the support and genome labels
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full, real where present for sample)
model = None         # None: the profile's model (litemedsam for smoke/cpu)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}
drawer_backend = None  # the drawer route's backend. None: the profile's, else its own (heuristic); "llm": FROZENSEG_LLM_URL, _KEY, _MODEL,
                       # replies recorded; "replay": rerun from recorded traces only (FROZENSEG_LLM_MODEL names them)
deploy_drawer = False  # True: deploy the drawer route (with drawer_backend) without the choice on the labels (override)

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from frozenseg.experiments.domain_report import alternative_routes, deployed_name, drawer_candidates, run_section
from frozenseg.experiments.peers import without_peers
from frozenseg.study import setup

DOMAIN = "isic"
study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
candidates, override = drawer_candidates(DOMAIN, drawer_backend, deploy_drawer, study.profile)   # override None: chosen on the labels
art = study.artifacts("02_isic")

# %% [markdown]
# ## Route choice, genome, skill-by-skill ablation and the oracle gap closed, beside the few-shot SAM peers
#
# The route is chosen among the domain's candidates (routes.yaml), concept search and the few-shot SAM peers
# PerSAM and Self-prompting SAM among them, by cross-validation on the labels. Whatever is deployed, the peers also
# run on the same test units from the same label draw (PerSAM with one support and with the N supports), in the
# peers table.

# %%
if DOMAIN in study.domains:
    results = run_section(study, DOMAIN, "02_isic", art, route=override, candidates=candidates)
else:
    art.note(f"{DOMAIN} is not among this run's domains ({study.domains}); nothing to show.")

# %% [markdown]
# ## Both routes on the same test units, and the worst cases of the one not deployed
#
# The two routes of this domain (and the deployed one, where a few-shot SAM peer won the choice; the peers' own rows
# are in the peers table above) fitted the same way at the largest budget (the same supports and genome cases) and run on the
# same test units. This is a comparison only: the deployed route was chosen on the labels (the choice table above),
# not on these test numbers. The worst cases of the route not deployed show what it gets wrong (ground truth
# green, prediction red, its box yellow).

# %%
if DOMAIN in study.domains:
    seed0 = study.seeds[0]
    chosen = deployed_name(results, seed0)
    routes = sorted(without_peers(candidates, chosen), key=lambda r: r.domain != chosen)   # the deployed route first
    other = routes[-1]
    table, fig = alternative_routes(study, DOMAIN, routes, seed=seed0, deployed=chosen)
    display(art.table(table, f"{DOMAIN}_routes", caption=(
        f"{study.title(DOMAIN)}: the candidate routes (peers aside unless deployed) at the largest budget, seed {seed0}, on the same test units: "
        "Dice after localization and deployed (mean over units, and how many fall below 0.5). A side-by-side "
        "comparison only: the deployed route (✓) was chosen by cross-validation on the labels, not on these "
        "numbers.")))
    art.figure(fig, f"{DOMAIN}_alternative_worst", caption=(
        f"The {len(fig.axes)} worst test units of the route not deployed at seed {seed0} ({other.domain}: "
        f"{other.localizer['name']}"
        f"{', ' + other.localizer.get('backend', '') if other.localizer.get('backend') else ''}): ground truth "
        "green, prediction red, its box yellow."))
    plt.show()

# %%
art.save()
