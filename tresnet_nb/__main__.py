"""Command line: ``python -m tresnet_nb run NOTEBOOK... [--preset NAME] [-p KEY VALUE]... [--out DIR]``."""

from __future__ import annotations

import argparse
import sys

from .runner import parse_value, run_notebooks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tresnet_nb", description="TResNet transfer-learning workbook")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks headless with papermill")
    run.add_argument("notebooks", nargs="+", help="notebook paths")
    run.add_argument("--preset", default=None, help="smoke, cpu or paper (fills parameters not given with -p)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                     help="set a notebook parameter; VALUE parsed like papermill's -p")  # fmt: skip
    run.add_argument("--out", default="runs", help="output folder (default: runs)")
    run.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        params = {key: parse_value(value) for key, value in args.parameter}
        try:
            outcomes = run_notebooks(args.notebooks, args.out, args.preset, params, args.kernel)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0 if all(o.status == "ok" for o in outcomes) else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
