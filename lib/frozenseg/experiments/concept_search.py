"""The concept-search study of notebook 11: per domain, HUE vs random selection from 1 and 5 labelled images."""
from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time

import numpy as np
import pandas as pd

from .. import evaluation as ev
from .. import paths
from ..concept.core import SAM3_TEXT_SETTINGS, Concept, FitSettings, default_settings, fit_concept, predict
from ..concept.hue import EMPTY_U, P_HI, P_LO  # noqa: F401  (the settings notebook 11 states)
from ..concept.loop import LOWEST_U_SPLIT, LoopConfig, annotation_loop, ground_truth_annotator
from ..data.splits import nested_order
from ..errors import ConfigError
from ..models.decoder_backend import DecoderBackend
from .concept_report import extreme_cases

NOTEBOOK = "11_concept_search"
# Notebook 11's `concept_backend`: the model a concept is learned through.
BACKENDS = {"decoder": "the study model's frozen prompt encoder + mask decoder (LiteMedSAM in smoke/cpu)",
            "sam3": "SAM3's text pathway (frozenseg.models.sam3; weights: manifest entry 'sam3' under FROZENSEG_DATA)"}
# Sizes when a profile leaves them open. The learning rate comes from the backend's preset (concept.core): LiteMedSAM's
# decoder fits with FitSettings(), not the source's SAM3_TEXT_SETTINGS rate (whether that one collapses its concepts:
# notebook 11's `lr_check` fits both on each domain's start set); SAM3 fits with SAM3_TEXT_SETTINGS.
# refit_epochs: epochs of each warm-started refit in the loop (the first fit of a loop uses `epochs`); the refit
# starts from the previous round's concept, so it needs fewer steps (None: `epochs`, the source's way).
DEFAULTS = {"k": 4, "epochs": 60, "refit_epochs": 20, "rounds": 5, "per_round": 5, "starts": (1, 5), "pool": None,
            "n_test": None, "n_boot": 1000}
SOURCE_LR = {"lr": SAM3_TEXT_SETTINGS.lr, "lr_min": SAM3_TEXT_SETTINGS.lr_min}


def check_backend(name: str) -> str:
    """``name`` if it is a known concept backend, else ConfigError listing them."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown concept_backend {name!r}; choose one of {list(BACKENDS)}: "
                          + "; ".join(f"{k} = {v}" for k, v in BACKENDS.items()))
    return name


def profile_backend(profile: str, concept_backend: str | None = None) -> str:
    """``concept_backend`` when given, else the profile's (``extra['concept_backend']``, default 'decoder')."""
    from ..config import get_profile

    return check_backend(concept_backend or get_profile(profile).extra.get("concept_backend", "decoder"))


def study_model(concept_backend: str = "decoder", model: str | None = None) -> str | None:
    """The model key notebook 11's study runs on: 'sam3' for the SAM3 backend, else ``model`` (None: the profile's)."""
    if check_backend(concept_backend) == "sam3":
        if model not in (None, "sam3"):
            raise ConfigError(f"concept_backend='sam3' learns its concepts through SAM3, not {model!r}; "
                              "leave model=None")
        return "sam3"
    return model


def concept_params(profile, backend: str = "decoder") -> dict:
    """Concept settings: DEFAULTS, then the backend's preset fit settings, then the profile's (explicit values win)."""
    base, preset = FitSettings(), default_settings(check_backend(backend))
    changed = {f.name: getattr(preset, f.name) for f in dataclasses.fields(FitSettings)
               if getattr(preset, f.name) != getattr(base, f.name)}
    return {**DEFAULTS, "lr": preset.lr, "lr_min": preset.lr_min, **changed,
            **(getattr(profile, "concept", None) or {})}


def make_backend(study, name: str = "decoder"):
    """The concept backend ``name`` of a study, features cached in the study's embedding cache (one code path)."""
    if check_backend(name) == "sam3":
        from ..models import load_concept_model

        return load_concept_model("sam3", cache=study.cache)
    return DecoderBackend(study.model, study.cache)


def backend_model(study, name: str) -> str:
    """Model key recorded in the results: the study's model for the decoder backend, else the backend's own."""
    return "sam3" if name == "sam3" else study.model_key


def loop_config(params: dict, strategy: str, start: int, seed: int) -> LoopConfig:
    """The loop of one strategy and start size under concept params (test U every round: lowest-U rows)."""
    return LoopConfig(strategy=strategy, start=start, rounds=params["rounds"], per_round=params["per_round"],
                      seed=seed, settings=fit_settings(params), test_u="all", refit_epochs=params.get("refit_epochs"))


def fit_settings(params: dict) -> FitSettings:
    """FitSettings from concept params (k, epochs, lr, lr_min and any FitSettings field)."""
    return FitSettings().with_(**{k: v for k, v in params.items() if k in FitSettings.__dataclass_fields__})


def test_scorer(cases, volumes: dict | None):
    """Scorer of test predictions through the evaluation core: a row per 2D case (native resolution; a negative by
    the empty rule), or per volume in 3D with a diagnostic row per slice; rows carry the case's ``index``."""
    return lambda preds: ev.unit_rows(cases, preds, volumes, with_hd95=False, slices=True)


def label_pool(train: list, size: int | None, seed: int) -> list:
    """The concept pool: the first ``size`` train cases (None: all) of the seeded draw the pipeline, the networks
    and the tuned decoder share, in draw order, so that its first L cases are ``subsample_train(train, L, seed)``."""
    n = len(train) if size is None else min(int(size), len(train))
    return [train[i] for i in nested_order(len(train), seed)[:n]]


def lr_check(study, params: dict, seed: int, concept_backend: str = "decoder") -> pd.DataFrame:
    """Per domain: the start fit (the first ``max(starts)`` images of the label draw, the first fit's epochs) with
    this backend's learning rate and with the source's (SAM3_TEXT_SETTINGS): its flag and Dice on those images."""
    backend = make_backend(study, concept_backend)
    base = fit_settings(params)
    arms = {"this study's": base, "the source's (SAM3_TEXT_SETTINGS)": base.with_(**SOURCE_LR)}
    if (base.lr, base.lr_min) == tuple(SOURCE_LR.values()):
        arms = {"this study's = the source's (SAM3_TEXT_SETTINGS)": base}
    rows = []
    for domain in study.domains:
        pool = label_pool(study.data(domain).train, max(params["starts"]), seed)
        pool = [c for c in pool if c.mask.any()]
        feats = backend.features([c.image for c in pool], desc=f"{domain} start set")
        for name, s in arms.items():
            concept = fit_concept(backend, feats, [c.mask for c in pool], s, seed=seed)
            preds = predict(backend, concept, feats)
            rows.append({"domain": domain, "learning rate": name, "lr": f"{s.lr:g} → {s.lr_min:g}",
                         "epochs": s.epochs, "images": len(pool), "flag": concept.flag or "–",
                         "empty masks": sum(not p.any() for p in preds),
                         "Dice on the start set": float(np.mean([ev.dice(p, c.mask) for p, c in zip(preds, pool)]))})
    return pd.DataFrame(rows)


def state_dir(profile: str):
    """Where interrupted loops keep their per-round state (removed when the whole study finishes)."""
    return paths.build_dir(profile) / "state" / NOTEBOOK


def _ids_hash(cases) -> str:
    """Short hash of case ids (part of a loop state's fingerprint)."""
    return hashlib.sha256("|".join(c.case_id for c in cases).encode()).hexdigest()[:12]


def run_domain(study, backend, domain: str, seed: int, params: dict) -> tuple[pd.DataFrame, dict]:
    """Every (start size, strategy) loop of one domain and seed; rows plus timings."""
    data = study.data(domain)
    pool = label_pool(data.train, params["pool"] or None, seed)
    test = ev.test_units(data, params["n_test"])
    pool_f = backend.features([c.image for c in pool], desc=f"{domain} pool")
    test_f = backend.features([c.image for c in test], desc=f"{domain} test")
    truth = [c.mask for c in pool]
    tag = {"model": backend.cache_id, "pool": _ids_hash(pool), "test": _ids_hash(test), "domain": domain}
    parts, times = [], {}
    for start in params["starts"]:
        shared = None
        for strategy in ("hue", "random"):
            cfg = loop_config(params, strategy, start, seed)
            t0 = time.perf_counter()
            st = annotation_loop(backend, pool_f, ground_truth_annotator(truth), cfg, test_f, pool_truth=truth,
                                 test_scorer=test_scorer(test, data.volumes), warm_round0=shared, tag=tag,
                                 state_path=state_dir(study.profile.name)
                                 / f"{backend.key}_{domain}_{strategy}_s{start}_seed{seed}.json")
            times[(start, strategy)] = {"loop_s": time.perf_counter() - t0, "fit_s": st.fit_s,
                                        "tokens": np.asarray(st.tokens, dtype=np.float32)}
            shared = shared or st.at_round(0)
            parts.append(loop_rows(st, pool, strategy, start))
    df = pd.concat(parts, ignore_index=True).assign(domain=domain, seed=seed, source=study.source_of(domain))
    return df, times


def loop_rows(state, pool, strategy: str, start: int) -> pd.DataFrame:
    """Tidy rows of one loop: test rows as scored, pool rows with unit 'pool', the pool case id and its rank in the
    seeded label draw (a round's labelled pool rows are its label ids)."""
    df = pd.DataFrame(state.rows)
    is_pool = df.split == "pool"
    df.loc[is_pool, "case_id"] = [pool[int(i)].case_id for i in df.loc[is_pool, "index"]]
    df.loc[is_pool, "unit"] = "pool"
    df.loc[is_pool, "draw_rank"] = df.loc[is_pool, "index"]
    df["strategy"], df["start"] = strategy, start
    df["method"] = [f"concept_{strategy}_start{start}_r{r}" + ("_lowestU" if sp == LOWEST_U_SPLIT else "")
                    for r, sp in zip(df["round"], df["split"])]
    df["flag"] = df["concept_flag"].fillna("")
    return df.drop(columns=["concept_flag"])


def run_concept_study(study, notebook: str = NOTEBOOK, concept_backend: str = "decoder"
                      ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The whole study for every domain and seed through ``concept_backend`` ('decoder' or 'sam3'): tidy results,
    timings, final concepts by (domain, seed, start, strategy)."""
    check_backend(concept_backend)
    params = concept_params(study.profile, concept_backend)
    backend = make_backend(study, concept_backend)      # a missing SAM3 checkpoint fails here, before any work
    parts, trows, concepts = [], [], {}
    for domain in study.domains:
        for seed in study.seeds:
            df, times = run_domain(study, backend, domain, seed, params)
            parts.append(df)
            trows += [{"domain": domain, "seed": seed, "start": s, "strategy": k, "loop_s": v["loop_s"],
                       "fit_start_s": v["fit_s"][0] if v["fit_s"] else np.nan} for (s, k), v in times.items()]
            concepts.update({(domain, seed, s, k): v["tokens"] for (s, k), v in times.items()})
    shutil.rmtree(state_dir(study.profile.name), ignore_errors=True)
    out = pd.concat(parts, ignore_index=True).drop(columns=["index"])
    out = out.assign(notebook=notebook, profile=study.profile.name, model=backend_model(study, concept_backend),
                     concept_backend=concept_backend)
    return out, pd.DataFrame(trows), concepts


def gallery_panels(study, df: pd.DataFrame, concepts: dict, n: int = 3, concept_backend: str | None = None
                   ) -> dict[str, list]:
    """Per domain: the most and least uncertain test images with the final HUE concept's prediction (backend: the
    results' ``concept_backend`` column unless given)."""
    if concept_backend is None:
        used = df["concept_backend"].dropna().unique() if "concept_backend" in df else []
        concept_backend = str(used[0]) if len(used) else "decoder"
    backend, panels = make_backend(study, concept_backend), {}
    for dom in study.domains:
        most, least, (seed, start) = extreme_cases(df, dom, n)
        concept = Concept(tokens=concepts[(dom, seed, start, "hue")], backend=backend.key)
        by_id = {c.case_id: c for c in study.data(dom).test}
        for label, rows in (("most uncertain", most), ("least uncertain", least)):
            cases = [by_id[cid] for cid in rows.case_id]
            preds = predict(backend, concept, backend.features([c.image for c in cases]))
            panels[f"{dom}: {label}"] = [(c, p, f"U={u:.2f} Dice={d:.2f}")
                                         for c, p, u, d in zip(cases, preds, rows.u, rows.dice)]
    return panels
