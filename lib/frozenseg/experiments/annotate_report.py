"""Notebook 13's tables, figure and sentences, each made from the loop's results (experiments.annotate_loop)."""
from __future__ import annotations

import pandas as pd

from .. import evaluation as ev

SPLIT_TITLES = {"held_out": "held-out test units (never labelled)",
                "rest": "the pool's still-unlabelled rest (the queue removes its hardest images)"}
STRATEGY_TITLES = {"hue": "uncertainty queue (HUE)", "random": "random order"}


def setting_note(study, spec, seeds) -> str:
    """What the loops run on: data source, model, profile, seeds and sizes."""
    data = study.data(spec.domain)
    return (f"{study.title(spec.domain)}, {study.source_detail(spec.domain)}; model {study.model_label}, profile "
            f"{study.profile.name}, loop seeds {list(seeds)}. Pool: {spec.pool or len(data.train)} images of the "
            f"train split in each seed's label-draw order; {spec.start} labelled at round 0, then {spec.rounds} "
            f"round(s) of {spec.per_round} corrections; route {spec.route!r} "
            f"(candidates: {', '.join(spec.candidates) if spec.candidates else 'every route'}).")


def curve_report(curves: pd.DataFrame) -> pd.DataFrame:
    """The curve table as shown: one row per split, round and strategy, Dice with its interval."""
    out = curves.assign(split=curves.split.map(SPLIT_TITLES), strategy=curves.strategy.map(STRATEGY_TITLES),
                        interval=[ev.fmt_interval({"mean": r.dice, "lo": r.lo, "hi": r.hi, "n": r.n, "equal": r.equal})
                                  for r in curves.itertuples()])
    return out[["split", "round", "labels", "strategy", "interval", "seed_sd", "seeds", "n"]].rename(
        columns={"interval": "Dice [95% CI]", "seed_sd": "sd across seeds", "n": "items"})


def curve_caption(study, spec, seeds, curves: pd.DataFrame) -> str:
    """Caption of the curves (figure and table)."""
    return (f"{study.title(spec.domain)} ({study.source_detail(spec.domain)}; {study.model_label}; profile "
            f"{study.profile.name}; loop seeds {list(seeds)}): mean Dice of the masks the annotate command wrote, "
            "after each round, for the uncertainty-queued loop and the random-order loop with the same budget. "
            f"Intervals: {ev.interval_note()} (an item's rows over seeds resample together). "
            "Round 0 is shared. The 'rest' panel scores a different, shrinking set per strategy.")


def figure_title(study, spec, seeds) -> str:
    """The figure's title: domain, data source, model, profile and loop seeds."""
    return (f"{study.title(spec.domain)}: {study.source_detail(spec.domain)}; {study.model_label}; profile "
            f"{study.profile.name}; loop seeds {list(seeds)}")


def curve_figure(curves: pd.DataFrame, title: str):
    """Dice against labelled images, one panel per split, solid = uncertainty queue, dashed = random, 95% bands."""
    import matplotlib.pyplot as plt

    splits = [s for s in SPLIT_TITLES if s in set(curves.split)]
    fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 3.8), squeeze=False, sharey=True)
    for ax, split in zip(axes[0], splits):
        for strategy, style in (("hue", "-"), ("random", "--")):
            g = curves[(curves.split == split) & (curves.strategy == strategy)].sort_values("labels")
            line, = ax.plot(g.labels, g.dice, style, marker="o", label=STRATEGY_TITLES[strategy])
            ax.fill_between(g.labels, g.lo, g.hi, color=line.get_color(), alpha=0.15)
        ax.set_title(SPLIT_TITLES[split], fontsize=9)
        ax.set_xlabel("labelled images")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Dice")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def gain_caption(study, spec, seeds) -> str:
    """Caption of the gain table."""
    return (f"{study.title(spec.domain)} ({study.source_detail(spec.domain)}; {study.model_label}; loop seeds "
            f"{list(seeds)}): held-out Dice of the uncertainty-queued loop minus the random-order loop after each "
            f"round, paired by held-out unit and seed; {ev.interval_note()}.")


def gain_report(gain: pd.DataFrame) -> pd.DataFrame:
    """The gain table as shown: the paired difference with its interval."""
    return pd.DataFrame({"round": gain["round"], "labels": gain.labels,
                         "HUE − random, held-out Dice [95% CI]": [ev.fmt_ci(r.hue_minus_random, r.lo, r.hi, 3)
                                                                 for r in gain.itertuples()],
                         "unit-seed pairs": gain.pairs, "units": gain.units})


def gain_note(gain: pd.DataFrame) -> str:
    """One sentence on the last round's paired difference, read from the gain table."""
    if not len(gain):
        return "No round after the start: nothing to compare."
    last = gain.sort_values("round").iloc[-1]
    iv = ev.fmt_ci(last.hue_minus_random, last.lo, last.hi, 3)
    side = ("above" if last.lo > 0 else "below" if last.hi < 0 else "not distinguishable from")
    return (f"After round {int(last['round'])} ({int(last.labels)} labels) the uncertainty queue's held-out Dice is "
            f"{side} the random order's: difference {iv} over {int(last.pairs)} unit-seed pairs.")


def round_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per seed, strategy and round: the route the command chose, its cross-validated Dice on the labels, and the
    command's wall time."""
    cols = [c for c in ["seed", "strategy", "round", "n_labels", "route", "cv_dice", "wall_s", "fit_s", "predict_s"]
            if c in df]
    return df[cols].drop_duplicates(["seed", "strategy", "round"]).sort_values(["seed", "strategy", "round"])\
        .reset_index(drop=True)


def round_caption(study, spec) -> str:
    """Caption of the rounds table."""
    return (f"The annotate command's own record per loop and round ({study.title(spec.domain)}, "
            f"{study.model_label}, profile {study.profile.name}): the route chosen by {spec.folds or 'the default'}-"
            "fold cross-validation on the labels, that route's cross-validated Dice, and the command's wall seconds "
            "on this machine, with its route choice and fit (fit_s) and its predictions (predict_s) apart (round 0 is run once per seed and shared; its time is repeated under both strategies).")
