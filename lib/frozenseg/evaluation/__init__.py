"""Evaluation: the one place where predictions become the report's numbers.

Every notebook, table and the README go through this package, so one rule holds everywhere:

* :mod:`.metrics`: Dice, IoU, HD95 (MONAI's definition), per-volume 3D scores, and the empty-mask rule.
* :mod:`.units`: the test units of a domain (2D images, negatives included; whole volumes), a prediction scored
  at the ground truth's native resolution (HD95 in mm where the file has a spacing, else native pixels), and
  per-volume aggregation of slice predictions.
* :mod:`.summary`: which rows count, the summary across seeds (one ddof, said by :data:`ACROSS_SEEDS`), HD95's
  median with the units that had no boundary.
* :mod:`.intervals`: the bootstrap (clustered by unit where rows repeat one; no interval below
  :data:`MIN_UNITS` units, never a zero-width one) and Spearman intervals.
* :mod:`.selection`: choices made on labels or validation data, never on test scores.

Call these through the package (``from frozenseg import evaluation as ev``; ``ev.scored_units(df)``).
"""
from __future__ import annotations

from .intervals import (LEVEL, MIN_UNITS, N_BOOT, cluster_bootstrap, fmt_ci, fmt_interval,  # noqa: F401
                        interval_note, mean_interval, spearman, spearman_interval, unit_interval)
from .selection import select_best  # noqa: F401
from .metrics import EMPTY_RULE, assemble_volume, dice, hd95, iou, score  # noqa: F401
from .summary import (ACROSS_SEEDS, SD_DDOF, fmt_mean_sd, hd95_summary, hd95_unit, mean_sd, per_seed,  # noqa: F401
                      scored_units, seed_cell, seed_summary)
from .units import (negatives, score_case, score_volume, test_units, unit_rows, upsample,  # noqa: F401
                    volume_rows)
