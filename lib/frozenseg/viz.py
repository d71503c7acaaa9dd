"""Plot helpers shared by the notebooks (Agg backend; ground truth green, prediction red)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

GT_COLOR, PRED_COLOR = "#22c55e", "#ef4444"


def overlay(ax, image: np.ndarray, gt: np.ndarray | None = None, pred: np.ndarray | None = None,
            box=None, title: str | None = None) -> None:
    """Show an image with the ground-truth contour (green), prediction contour (red) and an optional box."""
    ax.imshow(image, interpolation="nearest")
    for m, c in ((gt, GT_COLOR), (pred, PRED_COLOR)):
        if m is not None and m.any():
            ax.contour(m.astype(float), levels=[0.5], colors=[c], linewidths=1.2)
    if box is not None:
        x0, y0, x1, y1 = box
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#facc15", lw=1))
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def example_grid(examples: dict[str, list], n: int = 4, titles: dict[str, str] | None = None):
    """One row per domain, ``n`` Cases per row, ground truth outlined."""
    fig, axes = plt.subplots(len(examples), n, figsize=(2.2 * n, 2.3 * len(examples)), squeeze=False)
    for r, (dom, cases) in enumerate(examples.items()):
        for c in range(n):
            ax = axes[r, c]
            if c < len(cases):
                overlay(ax, cases[c].image, gt=cases[c].mask, title=cases[c].case_id)
            else:
                ax.set_axis_off()
        axes[r, 0].text(-0.08, 0.5, (titles or {}).get(dom, dom), transform=axes[r, 0].transAxes,
                        rotation=90, va="center", ha="right", fontsize=9)
    fig.tight_layout()
    return fig


def sensitivity_plot(summary: pd.DataFrame, titles: dict[str, str] | None = None):
    """Dice vs box jitter and vs box loosening, one line per domain, band = sd across seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, pert, xlabel in ((axes[0], "jitter", "edge jitter (fraction of box side)"),
                             (axes[1], "loosen", "box scale factor")):
        for dom, g in summary[summary.perturbation.isin([pert, "none"])].groupby("domain", sort=False):
            g = g.sort_values("x")
            label = (titles or {}).get(dom, dom)
            ax.plot(g.x, g["mean"], marker="o", label=label)
            if g["sd"].notna().any():
                ax.fill_between(g.x, g["mean"] - g["sd"].fillna(0), g["mean"] + g["sd"].fillna(0), alpha=0.2)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Dice (frozen decoder)")
    axes[0].set_ylim(0, 1)
    axes[1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def case_gallery(panels: dict[str, list], titles: dict[str, str] | None = None):
    """One row per label (e.g. domain + 'most uncertain'), panels of (case, prediction, caption)."""
    n = max((len(v) for v in panels.values()), default=1)
    fig, axes = plt.subplots(len(panels), n, figsize=(2.2 * n, 2.3 * len(panels)), squeeze=False)
    for r, (label, items) in enumerate(panels.items()):
        for c in range(n):
            if c < len(items):
                case, pred, cap = items[c]
                overlay(axes[r, c], case.image, gt=case.mask, pred=pred, title=cap)
            else:
                axes[r, c].set_axis_off()
        axes[r, 0].text(-0.08, 0.5, (titles or {}).get(label, label), transform=axes[r, 0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=8)
    fig.tight_layout()
    return fig


def domain_panels(domains, width: float = 3.4, height: float = 3.2):
    """One row of panels, one per domain, sharing the y axis: ``(fig, axes)`` with ``axes`` a flat array."""
    n = max(len(domains), 1)
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False, sharey=True)
    return fig, axes[0]


def finish_dice_panels(fig, axes, ylabel: str, legend_size: float = 7):
    """The shared ending of a row of Dice panels: y label and range [0, 1] on the first, legend on the last."""
    axes[0].set_ylabel(ylabel)
    axes[0].set_ylim(0, 1)
    axes[-1].legend(fontsize=legend_size, loc="lower right")
    fig.tight_layout()
    return fig
