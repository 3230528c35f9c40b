"""Will the model roles fit the GPU(s)? ``python -m actors.plan --config FILE --gpu-memory 24GiB [--gpus N]``

Prints the memory plan of actors/memory/ (per actor group and per GPU) from the
models' config files alone: no weights are downloaded or loaded, no GPU is needed.

Exit status: 0 the roles fit; 1 they do not (each overflow named: which GPU, by how much,
which roles; or a vLLM budget that cannot hold its model); 2 bad arguments or config, or a
model whose size could not be determined.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from core.config import SET_HELP, ConfigError, apply_overrides, read_yaml

    parser = argparse.ArgumentParser(prog="python -m actors.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a batch profile (YAML): its t2i, llm, vlm, captioner and clip sections are planned")
    parser.add_argument("--gpu-memory", required=True, help="memory of each GPU with a unit: 24GiB, 80GB, 81559MiB (nvidia-smi's figure)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs on the machine (default 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    parser.add_argument("--no-hub", action="store_true",
                        help="read config files from local folders and the Hugging Face cache only (else the hub is asked "
                             "for config files the cache lacks; HF_HUB_OFFLINE=1 does the same)")
    args = parser.parse_args(argv)

    from actors.memory.plan import make_plan
    from actors.memory.sections import role_sections
    from actors.memory.sizes import SizingError, parse_size

    try:
        gpu_memory = parse_size(args.gpu_memory)
        if args.gpus < 1:
            raise ValueError("--gpus must be at least 1")
        data = apply_overrides(read_yaml(args.config), args.set)
        sections = role_sections(data, args.config)
        plan = make_plan(sections, gpu_memory, args.gpus, use_hub=not args.no_hub)
    except (ValueError, ConfigError, SizingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plan.source = args.config
    print(plan.format())
    if plan.problems():
        return 1
    return 2 if plan.unknown else 0


if __name__ == "__main__":
    sys.exit(main())
