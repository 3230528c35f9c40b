"""Print a profile's resolved settings: ``python -m agents.config show --config FILE [--set KEY=VALUE ...] [KEY ...]``
(also ``expectdiff-config``).

Every setting the profile's job will run with — from the file, from ``--set``, or the default — one line
each as ``key = value  [source]``, its description below. The keys are those ``--set`` takes. Works for
batch, evaluation and MDSS training profiles (the kind is named on the first line). Reads no model and
starts nothing.

Exit status: 0 shown; 2 a bad profile or override (the file, the key and why), or a KEY that matches nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from core.cli import parse_or_status


def main(argv: Optional[Sequence[str]] = None) -> int:
    from core.config import SET_HELP

    parser = argparse.ArgumentParser(prog="python -m agents.config", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="show")
    show = commands.add_parser("show", help="print a profile's resolved settings with their descriptions",
                               description="Print a profile's resolved settings (file, --set, defaults) with each "
                                           "field's description.")
    show.add_argument("--config", default=None, help="a profile (YAML): batch, evaluation or MDSS training "
                                                     "(default: the batch job's built-in defaults)")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    show.add_argument("keys", nargs="*", metavar="KEY",
                      help="show only these keys and the keys below them (e.g. t2i, agent.max_steps)")
    show.add_argument("--brief", action="store_true", help="values only, no descriptions")
    show.add_argument("--json", action="store_true", help="a JSON list of {key, value, source, description}")
    args = parse_or_status(lambda: parser.parse_args(argv))
    if isinstance(args, int):
        return args

    from agents.profiles import load_profile
    from core.config import ConfigError
    from core.config_show import settings

    try:
        profile = load_profile(args.config, args.set)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        return _show(profile, settings(profile.config, profile.data, args.set), args)
    except BrokenPipeError:  # `... | head`: the reader left; nothing to report (and no error at exit)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _show(profile, rows, args) -> int:
    from core.config_show import format_settings

    if args.keys:
        wanted = [k.strip(".") for k in args.keys]
        unknown = [k for k in wanted if not any(r.key == k or r.key.startswith(k + ".") for r in rows)]
        if unknown:
            print(f"no such setting in this {profile.kind} profile: {', '.join(unknown)}", file=sys.stderr)
            return 2
        rows = [r for r in rows if any(r.key == k or r.key.startswith(k + ".") for k in wanted)]
    if args.json:
        print(json.dumps([vars(r) for r in rows], indent=1, ensure_ascii=False))
        return 0
    counts = {s: sum(r.source == s for r in rows) for s in ("profile", "--set", "default")}
    kind = {"batch": "a batch", "evaluation": "an evaluation", "mdss": "an MDSS training"}[profile.kind]
    print(f"# {args.config or '<built-in defaults>'}: {kind} profile ({profile.model_name}); "
          f"{len(rows)} settings: {counts['profile']} from the file, {counts['--set']} from --set, "
          f"{counts['default']} defaults")
    print(format_settings(rows, describe=not args.brief))
    return 0


if __name__ == "__main__":
    sys.exit(main())
