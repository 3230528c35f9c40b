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
