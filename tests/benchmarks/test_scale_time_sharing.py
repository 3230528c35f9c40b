"""``python -m benchmarks.scale --gpu-sharing time`` end to end on the simulated cluster: the stand-ins find their
node's GPU clock, the clocks serve the batched roles' calls, and the ideal is the linear programme over the
placement Ray chose (the unit figures are in tests/benchmarks/test_gpu_time_sharing.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]


def test_a_time_shared_level_runs_every_image_and_reports_the_clocks_and_the_bound(tmp_path):
    out = tmp_path / "time.json"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--gpu-sharing", "time", "--concurrency", "2",
                          "--images-per-concurrency", "4", "--max-steps", "2", "--dilation", "0.02", "--two-drivers", "none",
                          "--work", str(tmp_path / "w"), "--json", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    [level] = result["levels"]
    assert result["meta"]["gpu_sharing"] == "time" and level["failed"] == 0 and level["done"] == 8
    placement = level["placement"]
    nodes_with_batched = {p["node_id"] for p in placement if p["role"] in ("t2i", "captioner", "clip")}
    clocks = {c["node_id"]: c for c in level["gpu_clocks"]}
    # every GPU node has a clock; those with a batched role served its calls, the chat engines' nodes none
    assert set(clocks) >= {p["node_id"] for p in placement}
    for node in nodes_with_batched:
        assert clocks[node]["calls"] > 0 and clocks[node]["busy_s"] > 0
    for p in placement:
        if p["role"] in ("llm", "vlm"):
            assert clocks[p["node_id"]]["calls"] == 0
    shared = level["ideal"]["shared"]
    assert shared["bound"] != "none" and shared["images_per_s"] > 0
    assert set(shared["split"]) == {"t2i", "llm", "vlm", "captioner", "clip"}
    assert abs(sum(shared["split"]["t2i"].values()) - 1) < 1e-3
    # at concurrency 2 the pipeline, not a role, bounds the ideal
    assert level["ideal"]["bound"] == "concurrency"
    assert "GPU sharing: time" in run.stdout and "Node GPU clocks (measured)" in run.stdout
