"""``python -m frozenseg.plan status | run [--profile full] [--seeds 0 1 2] [--root DIR] [--timings FILE]``."""
from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError


def main(argv=None) -> int:
    """``status``: make data-status; ``run``: the plan a run of the profile would print before its first notebook."""
    ap = argparse.ArgumentParser(prog="python -m frozenseg.plan", description=__doc__)
    ap.add_argument("command", choices=["status", "run"])
    ap.add_argument("--profile", default="full")
    ap.add_argument("--seeds", nargs="+", default=["0"], help="e.g. --seeds 0 1 2 (or one quoted string)")
    ap.add_argument("--root", default=None, help="data root (default: $FROZENSEG_DATA or <repo>/data)")
    ap.add_argument("--timings", default=None, help="a rehearsal's run_times.json (default: report/build/rehearsal/)")
    a = ap.parse_args(argv)
    try:
        if a.command == "status":
            from .uses import status_lines

            print("\n".join(status_lines(a.root)))
        else:
            from .printout import plan_lines

            seeds = [int(s) for chunk in a.seeds for s in str(chunk).split()]
            print("\n".join(plan_lines(a.profile, seeds, a.root, timings_path=a.timings)))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
