"""Fixture ``ray_local``: a local Ray for one test module (2 logical CPUs), shut down after the module.

Per module, not per session: other modules start (and stop) a Ray of their own in-process — the batch job's
start-up, Ray Train's crash-resume runs, the start-up tests that check a local Ray leaves no process — and
one still connected from an earlier module would change what those see. A module that needs more around it
(e.g. stopping named actors first) overrides ``ray_local`` and asks for this one by the same name."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from core.ray_config import RayConfig, init_ray

    init_ray(RayConfig(num_cpus=2))
    yield ray
    ray.shutdown()
