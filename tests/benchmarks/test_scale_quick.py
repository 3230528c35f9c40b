"""``python -m benchmarks.scale --quick`` as CI runs it: placement, completion, and a throughput floor that can fail.

A simulated cluster of cluster.yaml's node types (1 head, 2 gpu_large, 2 gpu_small), the five roles
placed with configs/gpu_cluster.yaml's resources as latency-model stand-ins, the real batch job
(concurrency 4, 32 images: below the saturation point, where the driver's own time lengthens every
image and so lowers the throughput), the same level again with a 2 s (real) wait injected per graph
node in the driver, then two batch jobs at once on one set of shared role actors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {"t2i": "gpu_small", "captioner": "gpu_small", "clip": "gpu_small", "llm": "gpu_large", "vlm": "gpu_large"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    work = tmp_path_factory.mktemp("scale")
    out = work / "quick.json"
    # Ray's default temp folder as on a machine where no Ray has run yet (no /tmp/ray): the simulated cluster must
    # start there too (Ray writes its address file into that folder whatever the head's temp_dir). A short path:
    # the nodes' socket paths under it have a length limit.
    fresh = Path(tempfile.mkdtemp(prefix="rfm", dir="/tmp")) / "not_yet"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TMPDIR": str(fresh)}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--quick", "--work", str(work / "w"), "--keep",
                          "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    shutil.rmtree(fresh.parent, ignore_errors=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text()), work / "w"


def test_every_role_lands_on_its_node_type(quick):
    result, _ = quick
    for placement in [result["levels"][0]["placement"], result["two_drivers"]["placement"]]:
        assert sorted(p["role"] for p in placement) == ["captioner", "clip", "llm", "t2i", "t2i", "vlm"]  # t2i: 2 replicas
        for p in placement:
            assert p["node_type"] == EXPECTED[p["role"]], p
        # one GPU per gpu_large node: the LLM and the VLM cannot share one
        large = [p["node_id"] for p in placement if p["role"] in ("llm", "vlm")]
        assert len(set(large)) == 2
        # the two T2I replicas (half a GPU each) on two gpu_small nodes, not packed onto one GPU (placement: spread)
        assert len({p["node_id"] for p in placement if p["role"] == "t2i"}) == 2
    assert result["meta"]["nodes"] == {"head_cpu": 1, "gpu_large": 2, "gpu_small": 2}
    assert result["meta"]["off_loopback"] == []


def test_drivers_come_by_the_roles_through_the_batch_jobs_own_start_up(quick):
    """The benchmark starts the roles as shared roles (actors.ray_actors.start_roles, servers: the stand-ins); each
    driver runs agents.batch.startup.start_ray_and_roles and joins every group by name, checked by fingerprint."""
    result, _ = quick
    for job, name in [(result["levels"][0], "c4"), (result["levels"][1], "c4-injected"),
                      *[(j, "shared") for j in result["two_drivers"]["jobs"]]]:
        startup = {s["group"]: s for s in job["startup"]}
        assert sorted(startup) == ["captioner", "clip", "llm", "t2i", "vlm"]
        for group, s in startup.items():
            assert (s["started"], s["joined"]) == (0, len(s["actors"])), s  # joined, none started by the driver
            assert s["actors"] == [f"{name}:{group}:{i}" for i in range(len(s["actors"]))]
        assert len(startup["t2i"]["actors"]) == 2


def test_every_image_done_and_the_report_flags_the_standins(quick):
    result, work = quick
    level = result["levels"][0]
    assert (level["label"], level["done"], level["failed"]) == ("c4", 32, 0)
    assert level["max_inflight"] == 4
    assert level["report_banner"] == {"report_html": True, "random_weight_banner": True, "simulation_profile": True}
    html = (work / "out-c4" / "report.html").read_text()
    for role in ("t2i", "llm", "vlm", "captioner", "clip"):
        assert role in html.split("random-weight models", 1)[1][:200]
    records = [json.loads(line) for line in (work / "out-c4" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 32 and all(r["status"] == "done" for r in records)
    # the stand-ins make every candidate win: every image runs the full max_steps (2) iterations
    assert all(len(r["iterations"]) == 3 for r in records)
    assert (work / "out-c4" / "checkpoints.sqlite").stat().st_size > 0
    # the T2I replicas batched across optimisations (and across the two jobs, below)
    assert max(roles[name]["max_batch"] for roles in (level["roles"], result["two_drivers"]["roles"])
               for name in ("t2i[0]", "t2i[1]")) > 1


# The floor: 0.70 and 0.61 measured on an idle 2-core VM, 0.54 beside another Ray benchmark; on 2026-12-04 the same
# kind of VM gave 0.53–0.61 run alone and 0.43 once inside this module (0.39 with a 2-thread training beside it), with
# the code before and after that day's changes alike (docs/scale.md, "In CI"). A tenfold slower driver (its own time
# ~5 % of an image's latency here, at k = 0.02) would land near 0.35.
FLOOR = 0.40


def test_throughput_below_saturation_stays_above_the_floor(quick):
    level = quick[0]["levels"][0]
    assert level["ideal"]["bound"] == "concurrency"  # the level where the driver's time shows in the throughput
    assert level["efficiency"] >= FLOOR, level["efficiency"]
    # three estimators of one rate agree (no window bias): the slope, Little's law, the old middle half
    assert abs(level["efficiency_little"] - level["efficiency"]) < 0.15 * level["efficiency"]


def test_an_injected_wait_per_node_moves_the_figures_where_it_should(quick):
    plain, injected = quick[0]["levels"][:2]
    assert injected["label"] == "c4-injected" and injected["injected"]["calls"] > 0
    wait_s = injected["injected"]["wait_s"]  # 2 s real × k on the sim clock
    assert wait_s == pytest.approx(2.0 * quick[0]["meta"]["dilation"])
    # the directly measured orchestration time grows by the injected wait at every per-iteration node (one
    # checkpoint per node) ...
    for node in ("generate", "describe", "diff", "propose", "select"):
        grew = (injected["orchestration"]["per_node"][node]["mean_ms"] - plain["orchestration"]["per_node"][node]["mean_ms"]) / 1000
        assert 0.6 * wait_s < grew < 1.6 * wait_s, (node, grew, wait_s)  # 0.76× seen once under load
    # ... its share of an image's latency with it ...
    assert injected["driver_share_of_latency"] > plain["driver_share_of_latency"] + 0.15
    # ... so below saturation each image takes longer and the throughput falls
    assert injected["latency_over_path"] > plain["latency_over_path"] * 1.2
    assert injected["efficiency"] < 0.85 * plain["efficiency"]


def test_the_object_store_is_sampled_while_the_driver_runs(quick):
    store = quick[0]["levels"][0]["object_store"]
    assert store["samples"] >= 2 and store["missed"] == 0
    assert store["capacity_mb"] > 0 and store["peak_objects"] >= 0 and store["spilled_mb"] == 0


def test_two_drivers_share_the_roles_and_their_requests_interleave(quick):
    result, work = quick
    two = result["two_drivers"]
    assert [(j["done"], j["failed"]) for j in two["jobs"]] == [(16, 0), (16, 0)]
    assert all(j["report_banner"]["random_weight_banner"] for j in two["jobs"])
    assert len({j["out"] for j in two["jobs"]}) == 2
    # the jobs ran at the same time
    (a, b) = two["jobs"]
    assert a["start_abs"] < b["end_abs"] and b["start_abs"] < a["end_abs"]
    roles = two["interleaved"]
    for name, v in roles.items():
        assert set(v["jobs"]) == {"1", "2"}, (name, v)  # both jobs reached every replica that did work
    for prefix in ("t2i", "clip[0] text", "llm", "vlm"):
        assert sum(v["mixed"] for name, v in roles.items() if name.startswith(prefix)) > 0, prefix
