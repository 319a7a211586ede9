"""What the analysis commands share on the command line: help that shows every default, a --quick setting,
range checks naming the flag, and the run-then-write main with one-line errors."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable

from agent.config import flag


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and '(default: X)' after every option's help; options whose default is
    None (their help says what that means) or a switch's False get none."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parser(doc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)


def parse_with_quick(p: argparse.ArgumentParser, argv, quick: dict, positive: Iterable[str] = ()):
    """Parse argv; with --quick the `quick` values replace the defaults (options given explicitly still win).
    Options named in `positive` must be >= 1."""
    shown = " ".join(f"{flag(k)} {' '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                     for k, v in quick.items())
    p.add_argument("--quick", action="store_true",
                   help=f"a quick, rough look (the README gives its run time): {shown}; options given still win")
    args = p.parse_args(argv)
    if args.quick:
        p.set_defaults(**quick)
        args = p.parse_args(argv)
    for name in positive:
        if getattr(args, name) < 1:
            p.error(f"{flag(name)} must be >= 1, got {getattr(args, name)}")
    return args


def out_dir(args) -> Path:
    """Where an analysis command of a run writes: --out, or RUN_DIR/analysis."""
    return args.out or args.run_dir / "analysis"


def command_main(prog: str, args, run, write, markdown) -> int:
    """What the analysis commands of a run share: result = run(args), with a one-line error and exit code 2 on
    bad input (ValueError); then write(result, out) into --out or RUN_DIR/analysis and print the tables."""
    try:
        result = run(args)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    out = out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    write(result, out)
    print(markdown(result))
    print(f"wrote {out}/")
    return 0
