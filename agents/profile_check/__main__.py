"""Check a profile before downloading anything: ``python -m agents.profile_check --config FILE [--set ...]``
(also ``expectdiff-check``).

Runs that profile's settings on this CPU with each model replaced by its miniature twin — the same
pipeline classes, engines, chat templates, processor settings, role groups and shared engines —
through the real batch job on 2 images for 2 iterations, and prints what the CPU forced it to replace
(one line each) and the memory planner's table for the real models. The twins have random weights:
the check is of loading, templates, processors, budgets and plumbing, never of quality.

Exit status: 0 the profile ran; 1 it failed (the role and the setting named); 2 a bad config, or a
model whose architecture has no twin yet (named).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from core.cli import parse_or_status

DEFAULT_KIT = Path("~/.cache/expectdiff/twins")


def main(argv: Optional[Sequence[str]] = None, *, in_process: bool = False) -> int:
    """The command line. ``in_process`` (tests): MDSS training runs here on the Ray this process holds."""
    from core.config import SET_HELP

    parser = argparse.ArgumentParser(prog="python -m agents.profile_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a batch profile (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    parser.add_argument("--kit", type=Path, default=DEFAULT_KIT, help="where the twins are built (default %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="keep the twin profile and the job's output here "
                                                               "(default: a temporary folder, removed)")
    parser.add_argument("--gpu-memory", default="80GiB", help="GPU size for the memory planner's table (default %(default)s)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs for the memory planner's table (default 1)")
    parser.add_argument("--list-only", action="store_true", help="print the planner's table, the twins and every "
                        "replacement the CPU forces, then exit without running the job (batch profiles)")
    parser.add_argument("--address", default=None, help="join this running Ray cluster (e.g. 127.0.0.1:6379, or auto) "
                        "instead of starting a local Ray: the roles keep their custom resources and replica counts, "
                        "so a node type the cluster lacks fails the check naming the role (batch profiles)")
    args = parse_or_status(lambda: parser.parse_args(argv))
    if isinstance(args, int):
        return args

    from actors.memory.plan import make_plan
    from actors.memory.sections import role_sections
    from actors.memory.sizes import SizingError, parse_size
    from agents.config import ArpoConfig
    from agents.profile_check.check import run_job, sample_images, write_profile
    from agents.profile_check.twin_profile import NoTwin, twin_profile
    from agents.profiles import load_profile
    from core.config import ConfigError, validate

    try:
        profile = load_profile(args.config, args.set)
        if profile.kind == "mdss":
            return _check_training(profile.data, args, in_process)
        evaluation = profile.kind == "evaluation"
        # an evaluation profile: its batch-job part is what runs here
        cfg = profile.config.arpo_config() if evaluation else profile.config
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    print(f"Profile {args.config}: the memory planner's table for the real models")
    try:
        plan = make_plan(role_sections(cfg.model_dump(mode="json"), args.config), parse_size(args.gpu_memory), args.gpus)
        plan.source = args.config
        print("  " + plan.format().replace("\n", "\n  "))
    except (SizingError, ConfigError, ValueError) as exc:
        print(f"  (no plan: {exc})")

    kit = _prepare_kit(args.kit)
    try:
        twin = twin_profile(cfg.model_dump(mode="json"), kit, cluster=args.address is not None)
        validate(ArpoConfig, twin.profile, "<twin profile>")
    except NoTwin as exc:
        print(f"\nNOT CHECKED: {exc}", file=sys.stderr)
        return 2
    print("\nTwins (random weights):")
    for role, what in twin.twins.items():
        print(f"  {role:10s} {what}")
    print(f"\nReplaced because this is a CPU ({len(twin.replaced)}):")
    for line in twin.replaced:
        print(f"  {line}")
    if args.list_only:
        print("\nNot run (--list-only): the twins and the replacements above are what a check would run.")
        return 0

    with tempfile.TemporaryDirectory(prefix="expectdiff-check-") as tmp:
        work = args.out.resolve() if args.out else Path(tmp)
        profile_path = write_profile(twin, work / "twin_profile.yaml")
        images = sample_images(work / "images")
        where = f"on the Ray cluster at {args.address}" if args.address else "on a local Ray"
        print(f"\nRunning the batch job {where}: 2 images, 2 iterations, profile {profile_path} ...", flush=True)
        result = run_job(profile_path, images, work / "run", env={"RAY_ADDRESS": args.address} if args.address else None)
    print(f"\n{'PASSED' if result.passed else 'FAILED'}: {result.images_done} of 2 images done in {result.wall_s:.0f} s "
          f"(wall, this machine)")
    for problem in result.problems:
        print(f"  {problem}")
    if evaluation:
        print("An evaluation profile: its batch-job roles were checked; its DINO/ViT metric models and the "
              "evaluation itself were not run here.")
    print("Checked in miniature only: run on real weights not yet (the twins' outputs mean nothing).")
    return 0 if result.passed else 1


def _prepare_kit(kit: Path) -> Path:
    from actors.offline_kit import OFFLINE_KIT_MARKER
    from actors.offline_kit.build import MARKER_TEXT

    kit = kit.expanduser()
    kit.mkdir(parents=True, exist_ok=True)
    (kit / OFFLINE_KIT_MARKER).write_text(MARKER_TEXT)
    return kit


def _check_training(data: dict, args, in_process: bool = False) -> int:
    """An MDSS profile: a few steps of the real Ray Train loop with its models replaced by twins."""
    import yaml

    from agents.profile_check.check import run_training
    from agents.profile_check.train_profile import NoTrainTwin, train_twin_profile

    kit = _prepare_kit(args.kit)
    with tempfile.TemporaryDirectory(prefix="expectdiff-check-") as tmp:
        work = args.out.resolve() if args.out else Path(tmp)
        try:
            profile, replaced, twins = train_twin_profile(data, kit, work)
        except NoTrainTwin as exc:
            print(f"NOT CHECKED: {exc}", file=sys.stderr)
            return 2
        print(f"MDSS profile {args.config}: twins (random weights):")
        for role, what in (twins or {"model": "none needed (trained from scratch)"}).items():
            print(f"  {role:10s} {what}")
        print(f"\nReplaced because this is a CPU ({len(replaced)}):")
        for line in replaced:
            print(f"  {line}")
        path = work / "twin_profile.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(profile, sort_keys=False))
        print(f"\nRunning the real Ray Train loop: {profile['total_steps']} steps, profile {path} ...",
              flush=True)
        result = run_training(path, Path(profile["run_dir"]), in_process=in_process)
    print(f"\n{'PASSED' if result.passed else 'FAILED'}: training ran {profile['total_steps']} steps in "
          f"{result.wall_s:.0f} s (wall, this machine)")
    for problem in result.problems:
        print(f"  {problem}")
    print("Checked in miniature only: run on real weights not yet.")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
