"""``python -m frozenseg annotate FOLDER``: a few labels in, a mask for every image out, the uncertain ones queued."""
from __future__ import annotations

import argparse
import sys

from ..errors import FrozenSegError


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(
        prog="python -m frozenseg annotate",
        description="Segment every unlabelled image of FOLDER/images from the few masks in FOLDER/masks (matching "
                    "stems; a NIfTI mask for a volume or DICOM series); write the masks, uncertainty.csv, "
                    "to_annotate.txt, review.html and rounds.json under --out. Nothing in FOLDER is modified.")
    p.add_argument("folder", help="the collection: images/ (PNG/JPG/TIF, NIfTI volumes, one sub-folder per DICOM "
                                  "series) and masks/")
    p.add_argument("--out", help="output folder (default FOLDER/frozenseg)")
    p.add_argument("--batch", type=int, default=5, help="how many of the most uncertain items to queue (default 5)")
    p.add_argument("--route", default="auto", help="'auto' (chosen by cross-validation on the labels) or a route "
                                                   "of routes.yaml")
    p.add_argument("--candidates", help="comma-separated routes the choice is made from (default: every route)")
    p.add_argument("--folds", type=int, help="cross-validation folds (default: the router's)")
    p.add_argument("--genome-budget", type=int, help="genome evaluations per fit (default: the router's)")
    p.add_argument("--finalists", type=int, help="routes refitted with their genome (default: the router's)")
    p.add_argument("--model", default="litemedsam", help="the frozen model (default litemedsam)")
    p.add_argument("--max-side", type=int, default=512, help="2D images are worked on at most this many pixels "
                                                             "on their longer side (the decoder's masks come from 256 px "
                                                             "logits); masks are written at full size")
    p.add_argument("--window", type=float, nargs=2, metavar=("LEVEL", "WIDTH"),
                   help="intensity window for volumes (default: CT window 40/400 for CT series, else percentiles)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: every core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    """Run the command; a bad input prints the error (file and fix) and returns 2."""
    args = parser().parse_args(argv)
    from ..models import set_threads
    from .run import annotate

    set_threads(args.threads)
    try:
        annotate(args.folder, args.out, model=args.model, route=args.route, batch=args.batch,
                 candidates=args.candidates.split(",") if args.candidates else None, folds=args.folds,
                 genome_budget=args.genome_budget, finalists=args.finalists, seed=args.seed, max_side=args.max_side,
                 window=tuple(args.window) if args.window else None, progress=not args.no_progress)
    except FrozenSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
