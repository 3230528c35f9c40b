"""cluster.yaml passes Ray's own autoscaler validation (what `ray up` runs) and fits the roles."""
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load(CLUSTER.read_text())


def test_validates_against_ray_schema(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cluster))


def test_schema_rejects_a_broken_copy(cluster):
    """The validation above can fail: an unknown top-level key is refused."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = dict(cluster, not_a_ray_key=1)
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_no_latest_tags_and_every_key_commented():
    import re

    text = CLUSTER.read_text()
    assert ":latest" not in text
    lines = text.splitlines()
    key = re.compile(r"^( {0,4})[A-Za-z_]\w*:")
    for i, line in enumerate(lines):
        if key.match(line):
            above = next(l for l in reversed(lines[:i]) if l.strip())
            assert above.strip().startswith("#") or "#" in line, f"cluster.yaml:{i + 1} key without a comment: {line!r}"


def test_gpu_profile_resources_exist_in_cluster(cluster):
    """Every custom resource the GPU profile's actors request is offered by some node type."""
    from agents.config import ArpoConfig
    from core.config import load_config

    cfg = load_config(ArpoConfig, CLUSTER.parent / "configs" / "gpu_cluster.yaml")
    offered = set()
    for node in cluster["available_node_types"].values():
        offered |= set(node["resources"])
    for role in ("t2i", "llm", "vlm", "captioner", "clip"):
        res = getattr(cfg, role).resources
        assert set(res.custom_resources) <= offered, role
        assert res.custom_resources, f"{role} is not pinned to a node type"


def _ray_start_segments(command: str) -> list[str]:
    """The shell segments (split on ; && || and newlines) of ``command`` that run ``ray start``."""
    import re

    return [seg.strip() for seg in re.split(r";|&&|\|\||\n", command) if re.search(r"\bray start\b", seg)]


def test_every_ray_start_runs_with_token_auth(cluster):
    """Head and workers start Ray with RAY_AUTH_MODE=token (Ray then refuses unauthenticated
    clients and fails to start without a token); the token file is mounted on every node."""
    starts = []
    for section in ("head_start_ray_commands", "worker_start_ray_commands"):
        for command in cluster[section]:
            for seg in _ray_start_segments(command):
                starts.append(seg)
                assert seg.split()[0] == "RAY_AUTH_MODE=token", f"{section}: {seg!r} starts Ray without token auth"
    assert len(starts) == 2, starts  # one on the head, one on each worker
    # the token reaches the nodes as a file (Ray's default path), copied from a local secret file
    assert cluster["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def test_the_token_itself_is_never_in_the_file():
    """Only the secret file's path appears: no RAY_AUTH_TOKEN=value, no token-like literal
    (Ray's tokens are 64 hex digits; anything 32+ hex/base64 characters long is suspicious)."""
    import re

    text = CLUSTER.read_text()
    assert not re.search(r"RAY_AUTH_TOKEN\s*=", text)
    assert not re.search(r"[0-9a-fA-F]{32,}", text)
    assert not re.search(r"[A-Za-z0-9+/_-]{40,}", text)
    assert "--auth-token" not in text and "get-auth-token\n" not in text


def test_the_token_check_fails_the_start_when_the_file_is_missing(cluster, tmp_path):
    """The guard before `ray start` exits non-zero (naming the file) when no token was mounted."""
    import os
    import subprocess

    guard = next(c for c in cluster["head_start_ray_commands"] if "test -s ~/.ray/auth_token" in c)
    run = subprocess.run(["bash", "-c", guard], env={**os.environ, "HOME": str(tmp_path)},
                         capture_output=True, text=True)
    assert run.returncode != 0 and "~/.ray/auth_token" in run.stderr and "get-auth-token" in run.stderr
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x" * 64)
    run = subprocess.run(["bash", "-c", guard], env={**os.environ, "HOME": str(tmp_path)}, capture_output=True)
    assert run.returncode == 0 and oct((tmp_path / ".ray" / "auth_token").stat().st_mode & 0o777) == "0o600"
