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
# # 09 · One fixed pipeline everywhere, or a route per domain?
#
# The domain-agnostic pipeline runs *identical code* on every domain: a frozen-feature prototype localizer
# and a self-reprompt. The per-domain routes of notebooks 02-05 differ in their localizer topology and skills.
# A **router** picks a route for a domain from its few labelled images alone: every candidate route is fit on
# part of the labels and scored on the rest (held-out Dice); the best one is deployed. Test cases are never
# used to choose. Routes run here *without* their genome, so this compares topologies; the genome-fit
# deployed pipelines are in 02-05.
#
# The second half asks whether ranking automatic-mask-generator candidates by few-shot prototypes in *several*
# frozen feature spaces beats any single one. Offline the spaces are the model's own image embedding and a
# hand-crafted colour-texture space; DINOv2 joins when its weights are present (`make data-status`).

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | full
seeds = [0]          # experiment seeds: which train images are the labels the router sees
domains = None       # None: all four study domains, plus any in `folders`
source = None        # None: the profile's data source (phantom for smoke/cpu, real for full)
model = None         # None: the profile's model (litemedsam for smoke/cpu)
data_root = None     # None: $FROZENSEG_DATA, else <repo>/data
folders = {}         # extra domains, e.g. {"mydomain": "/path/with/images_and_masks"}

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from frozenseg.pipeline.routing import (FIXED, feature_spaces, label_vs_test, rank_domain, ranking_figure,
                                        ranking_table, route_domain, route_scores_table, router_settings,
                                        routing_table, tidy)
from frozenseg.results import save_results
from frozenseg.study import setup

study = setup(profile=profile, seeds=seeds, domains=domains, source=source, model=model,
              data_root=data_root, folders=folders)
art = study.artifacts("09_router")
rs = router_settings(study.profile)
print(f"candidate routes: {rs['candidates']}; labels the router sees: {rs['n_labels']}; cross-validation: "
      f"{rs['folds']} folds, the {rs['finalists']} best refitted with a genome budget of {rs['genome_budget']}; "
      f"test cases per domain: {rs['n_test'] or 'all'} (spleen: {rs['n_volumes']} whole volume(s)); "
      f"feature spaces: {feature_spaces()}")

# %% [markdown]
# ## Fixed vs routed
#
# For each domain and seed the router sees only N labelled train images. It scores every candidate route by
# k-fold cross-validation on them (each label held out once, the route fitted on the other folds as it would be
# deployed), first every route without its genome, then the best few refitted with their genome; it picks the
# best finalist, and reports each route's score with its spread across folds so the user sees how sure the choice
# is. Each route is then deployed from all N labels and scored on test (spleen: per volume, every slice).
# "Regret" is how far the routed choice falls short of the route that is best on test in hindsight.

# %%
routes = pd.concat([route_domain(study, d, s) for d in study.domains for s in study.seeds], ignore_index=True)
ranks = pd.concat([rank_domain(study, d, s) for d in study.domains for s in study.seeds], ignore_index=True)
save_results(tidy(study, routes, ranks), "09_router", study.profile.name)
n_lab = int(routes.n_labels.iloc[0])
display(art.table(route_scores_table(routes, {d: study.title(d) for d in study.domains}), "route_scores", caption=(
    f"What the router sees and what each route then gets: cross-validated Dice on the {n_lab} labelled train "
    f"images (mean ± sd across {rs['folds']} folds; 'genome' = refitted with its genome as deployed) and test Dice "
    "when deployed from those labels; ✓ = the router's choice.")))
display(art.table(routing_table(routes), "routing", float_format="{:.3f}", caption=(
    f"Test Dice of the fixed domain-agnostic pipeline ({FIXED}), of the route the router chose from {n_lab} "
    "labelled train images, of the domain's own hand-written route, and of the best route on test in hindsight "
    "(means over seeds and test units; spleen per volume).")))

# %%
art.figure(label_vs_test(routes, study.title), "label_vs_test", caption=(
    "Each candidate route: held-out Dice on the few labelled images (x, what the router sees) against test Dice "
    "(y); red ring = the router's choice. Points near the diagonal mean the labels predict test performance."))
plt.show()

# %% [markdown]
# ## Feature-ensemble ranking of automatic-mask-generator candidates
#
# One grid of box prompts per image goes through the frozen decoder; the candidates are ranked by the
# similarity of their pooled features to the few-shot prototypes, in one space or as the mean of per-space
# z-scores. "Perfect ranker" is the best candidate in the set (the ceiling of any ranking); "random pick" the
# mean candidate.

# %%
display(art.table(ranking_table(ranks).reset_index(), "feature_ranking", float_format="{:.3f}", caption=(
    f"Dice of the top-ranked candidate by feature space(s), per domain, {rs['n_test'] or 'all'} test cases, "
    f"seeds {study.seeds}. Spaces here: {', '.join(feature_spaces())} (colour = hand-crafted colour-texture "
    "statistics, not a learned representation).")))

# %%
art.figure(ranking_figure(ranks), "feature_ranking", caption=(
    "Top-ranked candidate's Dice per domain and feature-space combination, beside a random pick and a perfect "
    "ranker over the same candidates."))
plt.show()

# %%
art.save()
