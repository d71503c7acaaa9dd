"""Domains and run profiles: the single place where study sizes are set."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .errors import ConfigError

DOMAINS: tuple[str, ...] = ("isic", "spleen", "kvasir", "cxr")

DOMAIN_TITLES = {
    "isic": "ISIC 2018 (dermoscopy)",
    "spleen": "MSD Spleen (CT)",
    "kvasir": "Kvasir-SEG (endoscopy)",
    "cxr": "Chest X-ray (Montgomery + Shenzhen)",
}


@dataclass(frozen=True)
class Profile:
    """Sizes and models of one run profile."""

    name: str
    source: str                 # "phantom", "real", or "auto" (real where its data is present, phantom elsewhere)
    model: str                  # model key, see frozenseg.models.MODELS
    n_train: int                # labelled train pool per domain (the largest N budget)
    n_test: int | None          # test cases per 2D domain (None = all of the real test split)
    spleen_train_volumes: int
    spleen_test_volumes: int | None
    phantom_size: int           # side of a 2D phantom image, pixels
    phantom_depth: int          # slices in a phantom CT volume
    real_max_side: int | None = 1024  # real images larger than this are shrunk on load (memory)
    data_seed: int = 0          # phantom generation and the fixed test split; the experiment seed varies the rest
    jitter_levels: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
    loosen_levels: tuple[float, ...] = (1.0, 1.1, 1.25, 1.5, 2.0)
    budgets: tuple[int, ...] = (10, 25, 50, 100)
    concept: dict = field(default_factory=dict)   # concept-search sizes (frozenseg.experiments.concept_search.DEFAULTS)
    annotate: dict = field(default_factory=dict)  # annotate-loop sizes (frozenseg.experiments.annotate_loop.DEFAULTS)
    fewshot: dict = field(default_factory=dict)   # decoder tuning sizes (frozenseg.experiments.fewshot.DEFAULTS)
    baselines: dict = field(default_factory=dict)  # trained-network sizes (frozenseg.experiments.baselines.DEFAULTS)
    pipeline: dict = field(default_factory=dict)  # training-free pipeline sizes (frozenseg.experiments.domain.DEFAULTS)
    splits: dict = field(default_factory=dict)    # real data: domain -> "official" / "pranet" / "random" (default)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain dict, for provenance records."""
        return asdict(self)


# The 2-core profiles' trained baselines: the small U-Net and SegFormer at 128 px in bfloat16 mixed precision, each
# run stopped once its validation Dice has not risen by 0.005 in 5 evaluations (100 steps) or at 400 steps;
# notebook 06 shows every validation curve and what ended each run. One torch thread per run, so a sweep gives the
# same numbers serially or on a Dask cluster.
SMALL_BASELINES = {"archs": ("unet_regnetx002", "segformer_b0"), "image_side": 128, "batch_size": 8, "steps": 400,
                   "eval_every": 20, "patience": 5, "min_delta": 0.005, "monitor": "val_dice", "precision": "bf16",
                   "lr": 2e-3, "threads": 1, "keep_checkpoints": False, "nnunet": False}

# The 2-core profiles' other sections (cpu and sample share them). Concept search: the loop ends at 10 labels, so
# it meets the pipeline and the tuned decoder at N = 10.
SMALL_CONCEPT = {"k": 4, "epochs": 8, "refit_epochs": 4, "rounds": 2, "per_round": 5, "starts": (5,), "pool": 12}
# Notebook 13 on 2 cores: the annotate command on a Kvasir collection (the pool's first 40 images of each seed's
# draw plus the held-out test units), 10 labels then three rounds of 5 corrections, three loop seeds; the command's
# router with the 2-core profiles' router sizes over the candidates below (21 command runs; the runner's
# run_times.json has the notebook's time). They are Kvasir's candidates when the loop was built (kNN transfer in,
# concept search out); routes.yaml's kvasir list has changed since, and the loop keeps its own so its measured
# results stay what they were. The cpu profile's phantoms run a cheaper loop (two rounds, two candidates) to keep
# the cold report short.
SMALL_ANNOTATE = {"start": 10, "rounds": 3, "per_round": 5, "pool": 40, "folds": 3,
                  "genome_budget": 3, "finalists": 2, "candidates": ("kvasir", "kvasir_knn", "persam", "selfprompt"),
                  "seeds": (0, 1, 2)}
CPU_ANNOTATE = {**SMALL_ANNOTATE, "rounds": 2, "pool": 30, "genome_budget": 2, "finalists": 1,
                "candidates": ("kvasir", "selfprompt")}
SMALL_FEWSHOT = {"budgets": (10, 25), "epochs": 3, "patience": 2}
SMALL_PIPELINE = {"n_support": 10, "n_genome": 12, "genome_budget": 10, "router_n_test": 6, "router_folds": 3,
                  "router_genome_budget": 3, "router_finalists": 2,
                  "router_candidates": ["isic", "isic_drawer", "kvasir", "cxr", "agnostic", "concept", "persam",
                                        "selfprompt"],
                  # spleen's genome is left out for time (notebook 03's share of a run is in the runner's
                  # report/build/<profile>/run_times.json); notebook 03's genome_budget fits it anyway
                  "spleen_genome_budget": 0, "spleen_genome_volumes": 1}

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", source="phantom", model="litemedsam", n_train=12, n_test=3,
        spleen_train_volumes=2, spleen_test_volumes=1, phantom_size=128, phantom_depth=12,
        jitter_levels=(0.0, 0.2), loosen_levels=(1.0, 1.5), budgets=(5, 10),
        concept={"k": 2, "epochs": 6, "refit_epochs": 3, "rounds": 2, "per_round": 1, "starts": (1,), "pool": 4, "n_test": 3},
        fewshot={"budgets": (1, 2), "epochs": 2, "patience": 1, "n_test": 3},
        annotate={"start": 3, "rounds": 1, "per_round": 2, "pool": 8, "held_out": 3, "folds": 2,
                  "genome_budget": 1, "finalists": 1, "candidates": ("agnostic", "kvasir"), "seeds": (0,)},
        baselines={"archs": ("unet_regnetx002", "segformer_b0"), "budgets": (5,), "image_side": 32, "batch_size": 2,
                   "steps": 2, "eval_every": 1, "patience": 1, "threads": 1, "keep_checkpoints": False,
                   "nnunet": False},
        pipeline={"n_support": 5, "n_genome": 4, "genome_budget": 2, "router_n_test": 2,
                  "router_candidates": ["agnostic", "cxr"], "router_n_labels": 5, "router_folds": 2,
                  "router_genome_budget": 1, "router_finalists": 1,
                  "spleen_genome_budget": 2, "spleen_genome_volumes": 1},
    ),
    "cpu": Profile(
        name="cpu", source="phantom", model="litemedsam", n_train=100, n_test=15,
        spleen_train_volumes=10, spleen_test_volumes=2, phantom_size=256, phantom_depth=32,
        jitter_levels=(0.0, 0.1, 0.3), loosen_levels=(1.0, 1.25, 2.0),
        concept=SMALL_CONCEPT, fewshot=SMALL_FEWSHOT, baselines=SMALL_BASELINES, pipeline=SMALL_PIPELINE,
        annotate=CPU_ANNOTATE,
    ),
    # The real samples where they are present under FROZENSEG_DATA (../shared/realdata: Kvasir-SEG, ISIC, a silver CT
    # spleen folder, the resized chest X-ray folder), phantoms elsewhere, on 2 CPU cores; sizes chosen to keep a cold report short there (the runner
    # writes each notebook's time to report/build/<profile>/run_times.json; `make bench` part ``report`` times one).
    "sample": Profile(
        name="sample", source="auto", model="litemedsam", n_train=100, n_test=20,
        spleen_train_volumes=10, spleen_test_volumes=1, phantom_size=256, phantom_depth=32, real_max_side=512,
        jitter_levels=(0.0, 0.1, 0.3), loosen_levels=(1.0, 1.25, 2.0),
        concept=SMALL_CONCEPT, fewshot=SMALL_FEWSHOT, baselines=SMALL_BASELINES, pipeline=SMALL_PIPELINE,
        annotate=SMALL_ANNOTATE, splits={"isic": "official", "kvasir": "random"},
        # notebook 03 also evaluates these real spleen samples leave one scan out, where present (the CT folder and
        # the MR folder: frozenseg.experiments.spleen_lovo)
        extra={"spleen_lovo": ("spleen_ct_silver", "spleen_mr")},
    ),
    "full": Profile(
        name="full", source="real", model="sam_vit_b", n_train=100, n_test=None,
        spleen_train_volumes=25, spleen_test_volumes=None, phantom_size=256, phantom_depth=48,
        concept={"k": 4, "epochs": 60, "refit_epochs": 20, "rounds": 5, "per_round": 5, "starts": (1, 5), "pool": None, "n_test": None},
        baselines={"image_side": 256, "batch_size": 8, "steps": 4000, "eval_every": 200, "patience": 5, "lr": 3e-4,
                   "keep_checkpoints": True, "nnunet": True},
        pipeline={"n_support": 10, "n_genome": 40, "genome_budget": 120, "router_n_test": None,
                  "spleen_genome_budget": 40, "spleen_genome_volumes": 3},
        splits={"isic": "official", "kvasir": "pranet"},
    ),
    # The full profile's code paths at sizes that run in minutes on 2 CPU cores (make rehearsal, frozenseg.rehearsal):
    # real data (the rehearsal's tiny fake data root), SAM ViT-B, the study's networks (and nnU-Net when installed),
    # the drawer replaying recorded LLM traces, SAM3 as notebook 11's concept backend; every notebook-08 model runs
    # because the rehearsal writes weights for each.
    "rehearsal": Profile(
        name="rehearsal", source="real", model="sam_vit_b", n_train=4, n_test=1,
        spleen_train_volumes=2, spleen_test_volumes=1, phantom_size=64, phantom_depth=8, real_max_side=128,
        jitter_levels=(0.0, 0.2), loosen_levels=(1.0, 1.5), budgets=(2, 4),
        concept={"k": 2, "epochs": 2, "refit_epochs": 1, "rounds": 1, "per_round": 1, "starts": (1,), "pool": 3,
                 "n_test": 1, "n_boot": 20},
        fewshot={"budgets": (2,), "epochs": 1, "patience": 1, "n_test": 1},
        annotate={"start": 3, "rounds": 1, "per_round": 1, "held_out": 1, "folds": 2,
                  "genome_budget": 1, "finalists": 1, "candidates": ("agnostic", "kvasir"), "seeds": (0,)},
        baselines={"archs": ("unet_r34", "segformer_b2"), "budgets": (4,), "image_side": 32, "batch_size": 2,
                   "steps": 2, "eval_every": 1, "patience": 1, "threads": None, "keep_checkpoints": True,
                   "nnunet": True},
        pipeline={"n_support": 2, "n_genome": 2, "genome_budget": 1, "router_n_test": 1, "router_n_labels": 4,
                  "router_folds": 2, "router_genome_budget": 1, "router_finalists": 1,
                  "spleen_genome_budget": 1, "spleen_genome_volumes": 1},
        splits={"isic": "official", "kvasir": "pranet"},
        extra={"concept_backend": "sam3", "drawer_backend": "replay"},
    ),
}


def get_profile(name: str, **overrides) -> Profile:
    """Profile by name, with optional field overrides (e.g. ``source="real"``)."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} (make report PROFILE=cpu)")
    prof = PROFILES[name]
    bad = set(overrides) - set(prof.__dataclass_fields__)
    if bad:
        raise ConfigError(f"unknown profile field(s) {sorted(bad)}; valid: {sorted(prof.__dataclass_fields__)}")
    return replace(prof, **{k: v for k, v in overrides.items() if v is not None})


def check_domain(domain: str, extra: tuple[str, ...] = ()) -> str:
    """Return ``domain`` if known, else raise a ConfigError listing the valid ones."""
    if domain not in DOMAINS and domain not in extra:
        raise ConfigError(
            f"unknown domain {domain!r}; choose from {list(DOMAINS) + list(extra)}, "
            "or onboard a folder of image + mask pairs with frozenseg.data.load_folder"
        )
    return domain
