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
# # 04 · Kvasir-SEG (endoscopy): dense-correspondence label transfer
#
# Polyps share colour and texture with the surrounding mucosa, so a mean prototype washes out. The
# localizer here is **CPG label transfer** (after OP-SAM): each support mask is carried onto the query through
# the full query-support patch correlation of a frozen feature map (the SAM image embedding by default,
# DINOv2 when its weights are present), the prior's peak picks a connected component, and its box goes
# through the frozen decoder. The genome (CPG threshold, box margin, re-prompt margin, gate weights) is fit
# on labelled train images only. Compare the deployed Dice with the GT-box oracle: the remaining gap is
# localization.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | full
seeds = [0]          # experiment seeds: which train images are the support and genome labels
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full)
model = None         # None: the profile's model (litemedsam for smoke/cpu)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}

# %%
from frozenseg.experiments.domain_report import run_section
from frozenseg.study import setup

DOMAIN = "kvasir"
study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
art = study.artifacts("04_kvasir")

# %% [markdown]
# ## Route, genome, skill-by-skill ablation and the oracle gap closed, beside the few-shot SAM peers
#
# The route is chosen among the domain's candidates (routes.yaml), concept search and the few-shot SAM peers
# PerSAM and Self-prompting SAM among them, by cross-validation on the labels. Whatever is deployed, the peers also
# run on the same test units from the same label draw (PerSAM with one support and with the N supports), in the
# peers table.

# %%
if DOMAIN in study.domains:
    results = run_section(study, DOMAIN, "04_kvasir", art)
else:
    art.note(f"{DOMAIN} is not among this run's domains ({study.domains}); nothing to show.")

# %%
art.save()
