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
# used to choose. Every candidate is first screened without its genome (its topology), and the best few are
# refitted with their genome as they would be deployed, within the small genome budget printed below (the
# larger-budget pipelines of 02-05 are the domains' deployed ones).
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

from frozenseg import evaluation as ev
from frozenseg.experiments.router import (FIXED, HINDSIGHT, feature_spaces, label_vs_test, rank_domain,
                                          ranking_figure, ranking_images, ranking_table, route_domain,
                                          route_scores_table, router_settings, routing_table, tidy,
                                          unit_counts)
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
# is. Each route is then deployed from all N labels and scored on test through the evaluation core (2D images
# at their native resolution, negatives by the empty rule; spleen per volume, every slice). The route that is
# best on test is shown only in hindsight, as a reference for the **regret** (how far the routed choice falls
# short of it): it is read after the choice and chooses nothing.

# %%
routes = pd.concat([route_domain(study, d, s) for d in study.domains for s in study.seeds], ignore_index=True)
ranks = pd.concat([rank_domain(study, d, s) for d in study.domains for s in study.seeds], ignore_index=True)
save_results(tidy(study, routes, ranks), "09_router", study.profile.name)
n_lab = int(routes.n_labels.iloc[0])
display(art.table(route_scores_table(routes, {d: study.title(d) for d in study.domains}), "route_scores", caption=(
    f"What the router sees and what each route then gets: cross-validated Dice on the {n_lab} labelled train "
    f"images (mean ± sd across {rs['folds']} folds; 'genome' = refitted with its genome as deployed) and test Dice "
    f"when deployed from those labels ({ev.ACROSS_SEEDS}); ✓ = the router's choice, made on the labels.")))
display(art.table(routing_table(routes), "routing", caption=(
    f"Test Dice ({ev.ACROSS_SEEDS}; spleen per volume) of the fixed domain-agnostic pipeline ({FIXED}), of the "
    f"route the router chose from {n_lab} labelled train images, and of the domain's own hand-written route. "
    f"'{HINDSIGHT}': the route with the highest mean test Dice, read after the choice as the reference for "
    "'regret' (its mean minus the routed mean); it is not used to choose anything. Test units per domain, "
    f"negatives (no target) included and scored by the empty rule: "
    f"{'; '.join(f'{d}: {n}' for d, n in unit_counts(routes).items())}.")))

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
    "Dice of the top-ranked candidate by feature space(s), per domain, over test images that have a target (a "
    "ranking is scored against one, so negatives are left out here; images per domain: "
    f"{', '.join(f'{d}: {n}' for d, n in ranking_images(ranks).items())}; spleen: slices of its first "
    f"{rs['n_volumes']} test volume(s)), seeds {study.seeds}, means over images and seeds. Spaces here: "
    f"{', '.join(feature_spaces())} (colour = hand-crafted colour-texture statistics, not a learned "
    "representation).")))

# %%
art.figure(ranking_figure(ranks), "feature_ranking", caption=(
    "Top-ranked candidate's Dice per domain and feature-space combination, beside a random pick and a perfect "
    "ranker over the same candidates."))
plt.show()

# %%
art.save()
