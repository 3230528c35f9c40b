"""Compare reverse-prompt methods on a folder of images (thesis §4.3, Table 4.2).

Usage::

    python -m agents.evaluate --dir images/ --methods arpo,blip2,vlm,clip_interrogator[,file:prompts.csv]
                              [--out DIR] [--config FILE] [--set key=value ...]
                              [--arpo-results BATCH_OUT] [--seeds 0,1,2]

For every image and method: the method's prompt, its CLIP-T, the images it gives at
each seed with the same T2I model, and their CLIP-I, DINO and ViT scores. Writes to
the output folder: ``table.md`` / ``table.csv`` (Table 4.2), ``gallery.html`` (Figure
4.6), ``curve.svg`` / ``curve.csv`` (Figure 4.7, ARPO methods), ``eval_records.jsonl``
(every value; a rerun with the same --out skips what is there) and the images under
``images/<name>/<method>/seed<k>.png``.

ARPO's results are reused from a batch output folder (``--arpo-results``, the --out of
``python -m agents.batch_reverse``); images without a finished result there are
optimised first by the same batch job (unless evaluation.run_missing_arpo is false).
See docs/evaluation.md.

Exit status: 0 all evaluated; 1 some (image, method) pairs failed (see the log; rerun
to retry them); 2 setup error; 130 interrupted (rerun to resume).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any, Optional

from agents.batch.errors import SetupError
from agents.batch.runner import run_batch
from agents.eval.arpo_source import ArpoPlan
from agents.eval.config import EvalConfig
from agents.eval.methods import parse_methods
from agents.eval.records import fingerprint
from agents.eval.runner import EvalRoles, Evaluation, needed_roles, preflight
from agents.eval.tracking import log_table
from agents.eval.tracking import open_run as open_tracking
from agents.prompt_limit import with_prompt_limit
from core.cli import parse_or_status
from core.config import SET_HELP, ConfigError, apply_overrides, read_yaml, validate
from core.tracking import TrackingError

log = logging.getLogger("agents.evaluate")

IMAGE_EMBEDDER = "actors.image_embedder:ImageEmbedderServer"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agents.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True, help="Folder of reference images (searched recursively).")
    p.add_argument("--methods", help="Comma-separated methods (default: evaluation.methods of the config): "
                                     "arpo, arpo:<variant>, blip2, vlm, clip_interrogator, file:<prompts.csv>.")
    p.add_argument("--out", help="Output folder (default: evaluation.out_dir); rerun with the same one to resume.")
    p.add_argument("--config", help="YAML config (agents.eval.config.EvalConfig; a batch-job profile works too).")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--arpo-results", help="Batch output folder with the 'arpo' method's results (evaluation.arpo_results).")
    p.add_argument("--seeds", help="Comma-separated generation seeds (evaluation.seeds), e.g. 0,1,2.")
    p.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The config file, then --set overrides, then the dedicated flags; validated once."""
    data = read_yaml(args.config) if args.config else {}
    apply_overrides(data, args.set)
    ev = data.setdefault("evaluation", {})
    if not isinstance(ev, dict):
        raise ConfigError(args.config or "<defaults>", "evaluation", "must be a mapping")
    if args.methods:
        ev["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.out:
        ev["out_dir"] = args.out
    if args.arpo_results:
        ev["arpo_results"] = args.arpo_results
    if args.seeds:
        try:
            ev["seeds"] = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError("--seeds", "evaluation.seeds", f"not a comma-separated list of integers: {args.seeds!r}") from None
    return validate(EvalConfig, data, args.config or "<defaults>", args.set)


class RoleStarter:
    """Starts each role's actors once (per distinct config) and hands out their clients."""

    def __init__(self):
        self._clients: dict[str, Any] = {}

    async def get(self, role: str, server: str, section: Any) -> Any:
        from actors.ray_actors import start_role, wait_ready

        key = fingerprint(role, section)
        if key not in self._clients:
            client = start_role(role, server, section, section.resources)
            await wait_ready(client)
            self._clients[key] = client
        return self._clients[key]


async def start_eval_roles(cfg: EvalConfig, starter: RoleStarter, specs) -> EvalRoles:
    from actors.ray_actors import ROLE_SERVERS

    need = needed_roles(specs)
    roles = await asyncio.gather(
        starter.get("t2i", ROLE_SERVERS["t2i"], cfg.t2i), starter.get("clip", ROLE_SERVERS["clip"], cfg.clip),
        starter.get("dino", IMAGE_EMBEDDER, cfg.dino), starter.get("vit", IMAGE_EMBEDDER, cfg.vit))
    captioner = await starter.get("captioner", ROLE_SERVERS["captioner"], cfg.captioner) if "captioner" in need else None
    vlm = await starter.get("vlm", ROLE_SERVERS["vlm"], cfg.vlm) if "vlm" in need else None
    return EvalRoles(*roles, captioner=captioner, vlm=vlm)


def arpo_runner(starter: RoleStarter):
    """Runs the batch job for an ARPO variant, with that variant's LLM/VLM and the shared other roles."""
    async def run(plan: ArpoPlan, image_dir: Path) -> None:
        from actors.ray_actors import ROLE_SERVERS
        from actors.roles import Roles

        c = plan.cfg
        clients = {r: await starter.get(r, ROLE_SERVERS[r], getattr(c, r)) for r in ("t2i", "llm", "vlm", "captioner", "clip")}
        outcome = await run_batch(c, image_dir, plan.results_dir, Roles(**clients), profile=f"evaluation: {plan.key}")
        if outcome.interrupted:
            raise KeyboardInterrupt
        if outcome.failed:
            log.warning("method %s: %d image(s) failed in the batch job (see %s)", plan.key, outcome.failed, plan.results_dir)
    return run


async def _run(cfg: EvalConfig, image_dir: Path, specs, plan: Optional[list] = None, tracker=None) -> int:
    starter = RoleStarter()
    try:
        roles = await start_eval_roles(cfg, starter, specs)
        cfg = await with_prompt_limit(cfg, roles.t2i)
    except Exception as exc:
        raise SetupError(f"cannot start the model roles: {type(exc).__name__}: {exc}") from exc
    evaluation = Evaluation(cfg, image_dir, Path(cfg.evaluation.out_dir), roles, specs, arpo_runner=arpo_runner(starter),
                            lock_held=True, plan=plan)
    outcome = await evaluation.run()
    if tracker is not None:
        log_table(tracker, outcome.rows, outcome.outputs)
    for key, per_image in outcome.missing.items():
        if per_image:
            log.warning("%s: no prompt for %d image(s), e.g. %s", key, len(per_image), next(iter(per_image.values())))
    print(f"{outcome.images} images × {len(outcome.methods)} methods: {outcome.generated} images generated, "
          f"{outcome.reused} reused; table: {outcome.outputs.get('table.md')}, gallery: {outcome.outputs.get('gallery.html')}",
          file=sys.stderr)
    return outcome.exit_code


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_or_status(lambda: build_parser().parse_args(argv))
    if isinstance(args, int):
        return args
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
        specs = parse_methods(cfg.evaluation.methods)
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    image_dir = Path(args.dir)
    if not image_dir.is_dir():
        print(f"setup error: {image_dir}: no such image folder", file=sys.stderr)
        return 2
    from core.ray_config import init_ray

    started, tracker, status = False, None, "FAILED"
    try:
        held, plan = preflight(cfg, image_dir, specs)  # every model-free check, before Ray and any model start
        with held:
            tracker = open_tracking(cfg, Path(cfg.evaluation.out_dir))  # an unusable store: said before models load
            started = init_ray(cfg.ray)
            code = asyncio.run(_run(cfg, image_dir, specs, plan, tracker))
            status = "FINISHED"  # exit 1 (some images failed) still wrote the table: the tag says which
            if tracker is not None:
                tracker.set_tags({"expectdiff.exit_code": str(code)})
            return code
    except (SetupError, ConfigError, TrackingError) as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        status = "KILLED"
        print("interrupted; what finished is recorded, rerun to resume", file=sys.stderr)
        return 130
    finally:
        if tracker is not None:
            tracker.finish(status)
        if started:
            import ray

            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
