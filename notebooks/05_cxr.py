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
# # 05 · Chest X-ray: static few-shot lung box and four GT-free skills
#
# The lungs sit in the same place on every film, so the localizer is the **mean of the support boxes** in
# normalised coordinates. Then, each under a keep-best gate: a mask-bbox **self-reprompt**; a **repair trim**
# of over-segmentation outside the few-shot atlas where the colour model also says background; a
# **catastrophic fix** (positive points on lung-like pixels, negative points on the spill) for masks the gate
# calls catastrophic; and a **letterbox trim** that drops components lying over near-black padding. Concept search
# (prompt tokens fitted through the frozen decoder on the supports, no box) competes with this route on the labels:
# lungs are large and alike from film to film, which suits a concept. The source study's skill-by-skill chain on
# real films is printed below from report/source_study.yaml, for reference.

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
from frozenseg.report import source_chain_note
from frozenseg.study import setup

DOMAIN = "cxr"
study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
art = study.artifacts("05_cxr")
print(art.note(source_chain_note(DOMAIN), name="reference", reference=True))

# %% [markdown]
# ## Route, genome, skill-by-skill ablation and the oracle gap closed, beside the few-shot SAM peers
#
# The route is chosen among the domain's candidates (routes.yaml), concept search and the few-shot SAM peers
# PerSAM and Self-prompting SAM among them, by cross-validation on the labels. Whatever is deployed, the peers also
# run on the same test units from the same label draw (PerSAM with one support and with the N supports), in the
# peers table.

# %%
if DOMAIN in study.domains:
    results = run_section(study, DOMAIN, "05_cxr", art)
else:
    art.note(f"{DOMAIN} is not among this run's domains ({study.domains}); nothing to show.")

# %%
art.save()
