"""``python -m frozenseg COMMAND ...``: the project's user-facing commands (``annotate``)."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {"annotate": ("frozenseg.annotate.cli", "a mask for every image of a folder from a few labels, "
                                                    "the uncertain ones queued for correction")}


def main(argv=None) -> int:
    """Dispatch to a command's own ``main``; no or an unknown command prints the list."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m frozenseg COMMAND [ARGS]\ncommands:", file=sys.stderr if argv else sys.stdout)
        for name, (_, what) in COMMANDS.items():
            print(f"  {name:10s} {what}", file=sys.stderr if argv else sys.stdout)
        return 2 if argv and argv[0] not in ("-h", "--help") else 0
    return importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
