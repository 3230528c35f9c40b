"""deploy/kuberay/ (issue #27 item 3): the KubeRay manifests are valid KubeRay v1 objects and agree with
cluster.yaml, configs/gpu_cluster.yaml and the MDSS profile they run. Never applied to a Kubernetes cluster here.

* Schema: every object in deploy/kuberay/*.yaml validates against deploy/kuberay/schema/kuberay_v1.schema.yaml,
  a JSON Schema written from KubeRay v1.7.0's Go types and CRDs with closed objects (a misspelt field fails,
  as `kubectl apply`'s strict field validation refuses it), and passes the rules KubeRay's operator adds
  (ray-operator/controllers/ray/utils/validation.go) that a schema cannot say.
* cluster.yaml: Ray's own KubeRay code (ray.autoscaler._private.kuberay.autoscaling_config, which the autoscaler
  beside the head runs on the RayCluster) turns each cluster spec into node types; they must be cluster.yaml's:
  the same Ray resources (CPU, GPU, gpu_large / gpu_small), min/max workers, idle timeout and upscaling speed.
  Container CPU and GPU limits agree with them, images and rayVersion carry cluster.yaml's Ray pin, every Ray
  Pod exports metrics on cluster.yaml's --metrics-export-port, and rayStartParams values are strings.
* Roles and workers: the batch job's roles (configs/gpu_cluster.yaml with the entrypoint's --set) fit the cluster
  by the check the batch job runs at start-up (actors.capacity); the MDSS job's workers
  (configs/mdss/finetune_cifar10_ddpm.yaml with its --set) by training.placement, as training.train runs it.
* Entrypoints: checked like every documented command (tests/test_documented_commands.py: the module exists,
  each flag is in its --help, each repository path exists); output and data paths pass the project's own
  `ray job submit` checks (core/job_submit.py, training.train.resolve_run_dir) and lie on the shared volume.
* runtimeEnvYAML: deploy/kuberay/job_runtime_env.yaml with working_dir on the submitter Pod's volume; that file
  uploads what deploy/job_runtime_env.yaml uploads, installs pyproject.toml's dependencies, and Ray accepts it.
* Token: every cluster has authOptions {mode: token, secretName: expectdiff-ray-token}; no container sets the
  token itself, no Secret and no token-like string is in the files; docs/kuberay.md creates that Secret.

The mutant tests at the end break a loaded manifest in memory, one way per check, and assert the check says so.
"""
from __future__ import annotations

import copy
import re
import tomllib
from functools import lru_cache
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.test_documented_commands import (Command, module_and_args, option_value, problems_of, shell_lines,
                                            split_commands, tokens)

REPO = Path(__file__).resolve().parents[1]
KUBERAY = REPO / "deploy" / "kuberay"
SCHEMA_FILE = KUBERAY / "schema" / "kuberay_v1.schema.yaml"
RUNTIME_ENV = KUBERAY / "job_runtime_env.yaml"
UPLOAD_ENV = REPO / "deploy" / "job_runtime_env.yaml"
DOC = REPO / "docs" / "kuberay.md"
RAYCLUSTER = "raycluster.yaml"
JOBS = ["rayjob_batch.yaml", "rayjob_mdss.yaml"]
MANIFESTS = [RAYCLUSTER, *JOBS, "storage.yaml"]
SECRET = "expectdiff-ray-token"
TOKEN_KEY = "auth_token"  # the Secret's data key KubeRay reads (RAY_AUTH_TOKEN_SECRET_KEY)
CLAIM = "expectdiff-shared"
TOKEN_MIN_RAY = (2, 52, 0)  # validation.go: authOptions.mode token needs Ray >= 2.52.0
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
NAME_LIMIT = {"RayCluster": 53, "RayJob": 47}  # MaxRayClusterNameLength, MaxRayJobNameLength
# A Ray token (hex) or KubeRay's generated one (base64): 32+ such characters, digits and letters among them.
TOKENISH = re.compile(r"(?=[\w+/=-]*\d)(?=[\w+/=-]*[A-Za-z])[A-Za-z0-9+/=_-]{32,}")
HEAD_GROUP = "headgroup"  # Ray's name for the head in the autoscaling config it derives


# ---------------------------------------------------------------- loading

@lru_cache(maxsize=None)
def _load(name: str) -> tuple:
    return tuple(d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d is not None)


def manifests(name: str) -> list[dict]:
    """The objects of deploy/kuberay/<name>, a fresh copy each call (mutants change them)."""
    return copy.deepcopy(list(_load(name)))


def manifest(name: str) -> dict:
    (doc,) = manifests(name)
    return doc


@lru_cache(maxsize=None)
def cluster_yaml() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


@lru_cache(maxsize=None)
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def ray_pin() -> str:
    """cluster.yaml's `ray[default,train]==X` (its setup_commands)."""
    found = {m for cmd in cluster_yaml()["setup_commands"] for m in re.findall(r"ray\[[\w,]*\]==([0-9][0-9.]*)", cmd)}
    assert len(found) == 1, found
    return found.pop()


def image() -> str:
    """Ray's image for that pin and the project's Python (rayproject/ray:{version}-py{XY}-gpu)."""
    python = re.search(r">=\s*3\.(\d+)", pyproject()["project"]["requires-python"]).group(1)
    return f"rayproject/ray:{ray_pin()}-py3{python}-gpu"


def metrics_port() -> str:
    """The --metrics-export-port every `ray start` of cluster.yaml gives."""
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in cluster_yaml()[key]
              if "ray start" in c]
    ports = {re.search(r"--metrics-export-port=(\d+)", c).group(1) for c in starts}
    assert len(ports) == 1, ports
    return ports.pop()


# ---------------------------------------------------------------- walking a manifest

def cluster_specs(doc: dict):
    """(where, RayClusterSpec) of a RayCluster or of a RayJob's own cluster."""
    if doc.get("kind") == "RayCluster":
        yield "spec", doc.get("spec") or {}
    elif doc.get("kind") == "RayJob" and (doc.get("spec") or {}).get("rayClusterSpec") is not None:
        yield "spec.rayClusterSpec", doc["spec"]["rayClusterSpec"]


def groups(spec: dict):
    """(where, name, group spec, is_head) of a cluster spec's head and worker groups."""
    yield "headGroupSpec", "head", spec.get("headGroupSpec") or {}, True
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        yield f"workerGroupSpecs[{i}]", group.get("groupName", "?"), group, False


def pod_specs(doc: dict):
    """(where, PodSpec) of every Pod the object makes."""
    for where, spec in cluster_specs(doc):
        for gwhere, _, group, _ in groups(spec):
            yield f"{where}.{gwhere}", ((group.get("template") or {}).get("spec") or {})
    if doc.get("kind") == "RayJob" and doc["spec"].get("submitterPodTemplate"):
        yield "spec.submitterPodTemplate", doc["spec"]["submitterPodTemplate"].get("spec") or {}
    if doc.get("kind") == "Pod":
        yield "spec", doc.get("spec") or {}


def containers(doc: dict):
    for where, pod in pod_specs(doc):
        for key in ("containers", "initContainers"):
            for i, container in enumerate(pod.get(key) or []):
                yield f"{where}.{key}[{i}]", container


def string_leaves(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from string_leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from string_leaves(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def on_shared_volume(pod: dict, path: str, container: int = 0) -> bool:
    """Is the absolute ``path`` under a mount of the shared PersistentVolumeClaim in the Pod's container?"""
    claims = {v["name"] for v in pod.get("volumes") or [] if (v.get("persistentVolumeClaim") or {}).get("claimName") == CLAIM}
    mounts = [m["mountPath"] for m in (pod.get("containers") or [{}])[container].get("volumeMounts") or [] if m.get("name") in claims]
    return PurePosixPath(path).is_absolute() and any(PurePosixPath(path).is_relative_to(m) for m in mounts)


# ---------------------------------------------------------------- the checks (each returns its problems)

@lru_cache(maxsize=None)
def validator():
    import jsonschema

    schema = yaml.safe_load(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_problems(doc: dict) -> list[str]:
    def leaves(error):
        if error.context:
            for sub in error.context:
                yield from leaves(sub)
        else:
            yield error

    found = {f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
             for top in validator().iter_errors(doc) for e in leaves(top)}
    return sorted(found)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def kuberay_rule_problems(doc: dict) -> list[str]:
    """The operator's own checks (validation.go: ValidateRayClusterMetadata, ValidateRayClusterSpec,
    ValidateRayJobSpec, validateDeletionConfiguration) that these manifests come near."""
    problems, kind = [], doc.get("kind")
    name = (doc.get("metadata") or {}).get("name", "")
    if kind in NAME_LIMIT and (not DNS1035.match(name) or len(name) > NAME_LIMIT[kind]):
        problems.append(f"metadata.name {name!r}: a {kind} name must be a DNS-1035 label of at most {NAME_LIMIT[kind]} characters")
    for where, spec in cluster_specs(doc):
        autoscaling = bool(spec.get("enableInTreeAutoscaling"))
        for gwhere, gname, group, is_head in groups(spec):
            params, resources = group.get("rayStartParams") or {}, group.get("resources") or {}
            if not ((group.get("template") or {}).get("spec") or {}).get("containers"):
                problems.append(f"{where}.{gwhere}: no container")
            if resources and any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")):
                problems.append(f"{where}.{gwhere}: resources both in rayStartParams and in `resources` ({gname})")
            if "labels" in params:
                problems.append(f"{where}.{gwhere}: rayStartParams['labels'] is refused; use the group's `labels`")
            if is_head:
                continue
            low, high = group.get("minReplicas"), group.get("maxReplicas")
            if not autoscaling and (low is None or high is None):
                problems.append(f"{where}.{gwhere}: minReplicas and maxReplicas are required without autoscaling")
            if (low is not None and low < 0) or (high is not None and high < 0) or (
                    low is not None and high is not None and low > high):
                problems.append(f"{where}.{gwhere}: minReplicas {low} / maxReplicas {high} (0 <= min <= max)")
        auth = spec.get("authOptions") or {}
        if auth.get("mode") == "token":  # utils.IsAuthEnabled
            version = spec.get("rayVersion", "")
            if not version or _version(version) < TOKEN_MIN_RAY:
                problems.append(f"{where}: authOptions.mode token needs rayVersion >= 2.52.0, got {version!r}")
        if auth.get("enableK8sTokenAuth") and (auth.get("mode") != "token" or kind == "RayJob"):
            problems.append(f"{where}: authOptions.enableK8sTokenAuth needs mode token and no RayJob")
        if (spec.get("autoscalerOptions") or {}).get("version") == "v2":
            for gwhere, _, group, _ in groups(spec):
                if ((group.get("template") or {}).get("spec") or {}).get("restartPolicy", "Never") != "Never":
                    problems.append(f"{where}.{gwhere}: restartPolicy must be Never or unset with autoscaler v2")
    if kind == "RayJob":
        spec = doc.get("spec") or {}
        if spec.get("rayClusterSpec") is None and not (spec.get("clusterSelector") or {}).get("ray.io/cluster"):
            problems.append("spec: one of rayClusterSpec or clusterSelector (ray.io/cluster) must be set")
        ttl = spec.get("ttlSecondsAfterFinished", 0)
        if ttl < 0 or (ttl > 0 and not spec.get("shutdownAfterJobFinishes")):
            problems.append(f"spec.ttlSecondsAfterFinished {ttl}: must be >= 0, and > 0 only with shutdownAfterJobFinishes")
        if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
            problems.append("spec.suspend needs shutdownAfterJobFinishes")
        for key in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
            if key in spec and spec[key] <= 0:
                problems.append(f"spec.{key} {spec[key]}: must be a positive integer")
        if spec.get("backoffLimit", 0) < 0:
            problems.append("spec.backoffLimit: must not be negative")
        if spec.get("submissionMode") == "SidecarMode" and spec.get("submitterPodTemplate"):
            problems.append("spec: SidecarMode does not take a submitterPodTemplate")
        try:
            yaml.safe_load(spec.get("runtimeEnvYAML") or "")
        except yaml.YAMLError as exc:
            problems.append(f"spec.runtimeEnvYAML is not YAML: {exc}")
    return problems


def ray_autoscaling_config(spec: dict) -> dict:
    """What Ray 2.60's autoscaler derives from the cluster spec (its node types, caps, timeouts)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    return _derive_autoscaling_config_from_ray_cr(
        {"metadata": {"name": "expectdiff", "namespace": "default"}, "spec": copy.deepcopy(spec)})


def ray_start_params_problems(spec: dict) -> list[str]:
    return [f"{gwhere}.rayStartParams.{key}: {value!r} is not a string (KubeRay reads map[string]string)"
            for gwhere, _, group, _ in groups(spec) for key, value in (group.get("rayStartParams") or {}).items()
            if not isinstance(value, str)]


def cluster_yaml_problems(spec: dict) -> list[str]:
    """The cluster spec against cluster.yaml, through Ray's reading of it."""
    from ray.autoscaler._private.kuberay.utils import parse_quantity

    ours = cluster_yaml()
    try:
        derived = ray_autoscaling_config(spec)
    except Exception as exc:  # noqa: BLE001 - Ray refusing the spec is the finding
        return [f"Ray's autoscaler cannot read the cluster spec: {type(exc).__name__}: {exc}"]
    problems = []
    types = {name: t for name, t in derived["available_node_types"].items()}
    head = types.pop(HEAD_GROUP)
    want = {k: v for k, v in ours["available_node_types"].items() if k != ours["head_node_type"]}
    have = {name.replace("-", "_"): t for name, t in types.items()}
    if set(have) != set(want):
        problems.append(f"worker groups {sorted(types)}; cluster.yaml's worker node types are {sorted(want)} "
                        "(group name = node type with '-' for '_')")
    without_memory = lambda r: {k: v for k, v in r.items() if k != "memory"}  # noqa: E731
    head_want = ours["available_node_types"][ours["head_node_type"]]["resources"]
    if without_memory(head["resources"]) != head_want:
        problems.append(f"head: Ray resources {without_memory(head['resources'])}, cluster.yaml "
                        f"{ours['head_node_type']} {head_want}")
    for name in sorted(set(have) & set(want)):
        got, exp = without_memory(have[name]["resources"]), want[name]["resources"]
        if got != exp:
            problems.append(f"group for {name}: Ray resources {got}, cluster.yaml {exp}")
        for key in ("min_workers", "max_workers"):
            if have[name][key] != want[name].get(key, 0):
                problems.append(f"group for {name}: {key} {have[name][key]}, cluster.yaml {want[name].get(key, 0)}")
    for key in ("idle_timeout_minutes", "upscaling_speed"):
        if float(derived[key]) != float(ours[key]):
            problems.append(f"{key}: {derived[key]} from the autoscalerOptions, cluster.yaml {ours[key]}")
    if not spec.get("enableInTreeAutoscaling"):
        problems.append("enableInTreeAutoscaling is not true: no autoscaler, unlike cluster.yaml")
    if spec.get("rayVersion") != ray_pin():
        problems.append(f"rayVersion {spec.get('rayVersion')!r}, cluster.yaml pins Ray {ray_pin()}")
    port = metrics_port()
    for gwhere, gname, group, is_head in groups(spec):
        params = group.get("rayStartParams") or {}
        if params.get("metrics-export-port") != port:
            problems.append(f"{gwhere}: rayStartParams metrics-export-port {params.get('metrics-export-port')!r}, "
                            f"cluster.yaml --metrics-export-port={port}")
        container = (((group.get("template") or {}).get("spec") or {}).get("containers") or [{}])[0]
        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        if ports.get("metrics") != int(port):
            problems.append(f"{gwhere}: container port 'metrics' is {ports.get('metrics')}, not {port}")
        if is_head:
            continue
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        node = want.get(gname.replace("-", "_"), {}).get("resources", {})
        cpu = parse_quantity(str(limits["cpu"])) if "cpu" in limits else None
        if cpu != node.get("CPU"):
            problems.append(f"{gwhere}: container cpu limit {limits.get('cpu')!r}, cluster.yaml CPU {node.get('CPU')}")
        gpu = limits.get("nvidia.com/gpu")
        if gpu is None or parse_quantity(str(gpu)) != node.get("GPU", 0) or str(requests.get("nvidia.com/gpu", gpu)) != str(gpu):
            problems.append(f"{gwhere}: nvidia.com/gpu limit {gpu!r} (request {requests.get('nvidia.com/gpu')!r}), "
                            f"cluster.yaml GPU {node.get('GPU', 0)}")
    return problems


def image_problems(doc: dict) -> list[str]:
    return [f"{where}: image {c.get('image')!r}, not {image()} (cluster.yaml's Ray, the project's Python)"
            for where, c in containers(doc) if c.get("image") != image()]


def token_problems(doc: dict) -> list[str]:
    """Token authentication through the Secret, and no token anywhere in the object."""
    problems = []
    for where, spec in cluster_specs(doc):
        auth = spec.get("authOptions") or {}
        if auth.get("mode") != "token":
            problems.append(f"{where}.authOptions.mode is {auth.get('mode')!r}: token authentication is off")
        if auth.get("secretName") != SECRET:
            problems.append(f"{where}.authOptions.secretName is {auth.get('secretName')!r}, not the Secret {SECRET} "
                            "(without it KubeRay makes a random token per cluster)")
        if auth.get("enableK8sTokenAuth"):
            problems.append(f"{where}.authOptions.enableK8sTokenAuth: Kubernetes tokens, not the Secret's")
    for where, container in containers(doc):
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
            if env.get("name") == "RAY_AUTH_TOKEN" and ("value" in env or (ref.get("name"), ref.get("key")) != (SECRET, TOKEN_KEY)):
                problems.append(f"{where}: RAY_AUTH_TOKEN not from the Secret {SECRET} (key {TOKEN_KEY})")
            if env.get("name") == "RAY_AUTH_MODE" and env.get("value") != "token":
                problems.append(f"{where}: RAY_AUTH_MODE={env.get('value')!r}")
    if doc.get("kind") == "Secret" or "stringData" in doc or "data" in doc:
        problems.append(f"a Secret ({(doc.get('metadata') or {}).get('name')}) in the repository: create it with kubectl")
    for path, text in string_leaves(doc):
        if TOKENISH.fullmatch(text.strip()):
            problems.append(f"{path}: a token-like literal")
    if doc.get("kind") == "RayJob":
        env_vars = (yaml.safe_load(doc["spec"].get("runtimeEnvYAML") or "") or {}).get("env_vars") or {}
        problems += [f"runtimeEnvYAML env_vars.{k}: the token travels through the Secret only"
                     for k in env_vars if k.startswith("RAY_AUTH")]
    return problems


def volume_problems(doc: dict) -> list[str]:
    """Every persistent volume is the shared claim, and the claim is ReadWriteMany."""
    problems = [f"{where}: volume {v.get('name')} claims {v['persistentVolumeClaim'].get('claimName')!r}, not {CLAIM}"
                for where, pod in pod_specs(doc) for v in pod.get("volumes") or []
                if "persistentVolumeClaim" in v and v["persistentVolumeClaim"].get("claimName") != CLAIM]
    if doc.get("kind") == "PersistentVolumeClaim":
        if doc["metadata"].get("name") != CLAIM:
            problems.append(f"the claim is {doc['metadata'].get('name')!r}, the Pods mount {CLAIM}")
        if "ReadWriteMany" not in (doc.get("spec") or {}).get("accessModes", []):
            problems.append("the claim is not ReadWriteMany: head, workers and submitter mount it on different nodes")
    return problems


def cluster_shape(spec: dict):
    """core.ray_cluster.ClusterShape of the cluster at start (the head) with its autoscaled node types."""
    from core.ray_cluster import ClusterShape

    types = dict(ray_autoscaling_config(spec)["available_node_types"])
    head = types.pop(HEAD_GROUP)
    return ClusterShape(nodes=[head["resources"]], node_types=[(t["resources"], t["max_workers"]) for t in types.values()])


def entry_args(job: dict) -> tuple[str, list[str]]:
    return module_and_args(tuple(tokens(job["spec"]["entrypoint"])))


def sets(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--set"] + [a[6:] for a in args if a.startswith("--set=")]


def role_problems(job: dict) -> list[str]:
    """The batch job's start-up check (agents.batch.startup: actors.capacity) on the job's cluster."""
    from actors.capacity import capacity_problems
    from actors.role_groups import role_groups
    from agents.config import ArpoConfig
    from core.config import load_config

    _, args = entry_args(job)
    cfg = load_config(ArpoConfig, REPO / option_value(args, "--config"), sets(args))
    return capacity_problems(role_groups(cfg), cluster_shape(job["spec"]["rayClusterSpec"]))


def mdss_problems(job: dict) -> list[str]:
    """training.train's placement check (training.placement.place_workers) on the job's cluster."""
    from core.config import ConfigError, load_config
    from training.config import TrainConfig
    from training.placement import place_workers

    _, args = entry_args(job)
    cfg = load_config(TrainConfig, REPO / option_value(args, "--config"), sets(args))
    try:
        place_workers(cfg, cluster_shape(job["spec"]["rayClusterSpec"]), local_ray=False)
    except ConfigError as exc:
        return [str(exc)]
    return []


def entrypoint_problems(job: dict) -> list[str]:
    """The entrypoint as a `ray job submit` entrypoint of the docs, and its paths on the shared volume."""
    from core.config import ConfigError, load_config
    from core.job_submit import JOB_ENV_VAR, missing_relative_input_problem, relative_output_problem

    line = job["spec"]["entrypoint"]
    argv = tuple(tokens(line))
    problems = problems_of(Command(f"{job['metadata']['name']}:entrypoint", line, (), argv, False, False, submitted=True))
    target = module_and_args(argv)
    if target is None:
        return problems + [f"entrypoint {line!r} is not `python -m MODULE ...`"]
    module, args = target
    submitted = {JOB_ENV_VAR: "{}"}  # what Ray's job supervisor sets for the entrypoint
    spec = job["spec"].get("rayClusterSpec") or {}
    head = ((spec.get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}
    workers = [((g.get("template") or {}).get("spec") or {}) for g in spec.get("workerGroupSpecs") or []]
    paths: list[tuple[str, str, list]] = []  # (what, path, Pods that must see it)
    if module == "agents.batch_reverse":
        for key, check in (("--out", relative_output_problem), ("--dir", missing_relative_input_problem)):
            value = option_value(args, key)
            if value is None:
                problems.append(f"no {key}: the job's copy of the working directory is deleted with it")
                continue
            if problem := check(key, value, submitted):
                problems.append(problem)
            paths.append((key, value, [head]))  # the driver alone reads the images and writes the results
    if module == "training.train":
        from training.config import TrainConfig
        from training.train import resolve_run_dir

        try:
            cfg = load_config(TrainConfig, REPO / option_value(args, "--config"), sets(args))
            resolve_run_dir(cfg.run_dir, submitted_job=True)
        except ConfigError as exc:
            problems.append(str(exc))
        else:
            paths += [("run_dir", cfg.run_dir, [head, *workers])]  # every Ray Train worker writes checkpoints
            if "$" in cfg.data.path or not cfg.data.path.startswith("/"):
                problems.append(f"data.path {cfg.data.path!r}: give the folder on the shared volume (--set data.path=/...)")
            else:
                paths.append(("data.path", cfg.data.path, workers))  # each worker reads the images
    for what, path, pods in paths:
        if PurePosixPath(path).is_absolute() and not all(on_shared_volume(pod, path) for pod in pods):
            problems.append(f"{what} {path}: not on the shared volume ({CLAIM}) of every Pod that uses it")
    return problems


def runtime_env_problems(job: dict) -> list[str]:
    """runtimeEnvYAML = deploy/kuberay/job_runtime_env.yaml with working_dir on the submitter's mount."""
    spec = job["spec"]
    env = yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}
    reference = yaml.safe_load(RUNTIME_ENV.read_text())
    problems = [f"runtimeEnvYAML {key}: {env.get(key)!r} differs from deploy/kuberay/job_runtime_env.yaml's {reference.get(key)!r}"
                for key in sorted((set(env) | set(reference)) - {"working_dir"}) if env.get(key) != reference.get(key)]
    working_dir = env.get("working_dir", "")
    submitter = (spec.get("submitterPodTemplate") or {}).get("spec") or {}
    if spec.get("submissionMode", "K8sJobMode") != "K8sJobMode":
        problems.append(f"submissionMode {spec.get('submissionMode')!r}: only K8sJobMode's submitter Pod reads a local working_dir")
    elif "://" not in working_dir and not on_shared_volume(submitter, working_dir):
        problems.append(f"runtimeEnvYAML working_dir {working_dir!r}: not on the shared volume in the submitter Pod, "
                        "whose `ray job submit` packages it")
    return problems


def job_cluster_problems(job: dict) -> list[str]:
    """A RayJob's own cluster is deploy/kuberay/raycluster.yaml's."""
    spec = job["spec"]
    problems = [] if spec.get("rayClusterSpec") == manifest(RAYCLUSTER)["spec"] else [
        "spec.rayClusterSpec differs from deploy/kuberay/raycluster.yaml's spec"]
    if spec.get("clusterSelector"):
        problems.append("spec.clusterSelector: the job runs on its own cluster (rayClusterSpec)")
    if not spec.get("shutdownAfterJobFinishes"):
        problems.append("spec.shutdownAfterJobFinishes is not true: the job's GPU cluster would outlive it")
    if not spec.get("activeDeadlineSeconds"):
        problems.append("spec.activeDeadlineSeconds is not set: no ceiling on a stuck job")
    return problems


# ---------------------------------------------------------------- the tests

def test_the_schema_is_a_json_schema_and_names_its_source():
    validator()
    header = SCHEMA_FILE.read_text().split("$schema")[0]
    assert re.search(r"ray-project/kuberay, tag v1\.7\.0 \(commit [0-9a-f]{40}\)", header)


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_a_valid_kuberay_v1_or_core_object(name):
    for doc in manifests(name):
        assert schema_problems(doc) == [], doc.get("kind")
        assert kuberay_rule_problems(doc) == [], doc.get("kind")


@pytest.mark.parametrize("name", [RAYCLUSTER, *JOBS])
def test_cluster_matches_cluster_yaml(name):
    (where, spec), = cluster_specs(manifest(name))
    assert ray_start_params_problems(spec) == []
    assert cluster_yaml_problems(spec) == []


@pytest.mark.parametrize("name", JOBS)
def test_rayjob_runs_on_raycluster_yaml_until_it_ends(name):
    job = manifest(name)
    assert job_cluster_problems(job) == []
    assert job["spec"]["submissionMode"] == "K8sJobMode"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0


@pytest.mark.parametrize("name", MANIFESTS)
def test_images_carry_cluster_yaml_ray_and_the_project_python(name):
    for doc in manifests(name):
        assert image_problems(doc) == []


@pytest.mark.parametrize("name", MANIFESTS)
def test_the_token_comes_from_the_secret_only(name):
    for doc in manifests(name):
        assert token_problems(doc) == []
        assert volume_problems(doc) == []


def test_no_secret_token_or_token_file_in_deploy_kuberay():
    """Every file, comments included: no Secret object, no token-like word (the schema's recorded KubeRay commit
    aside), no file named like a token or key."""
    commit = re.search(r"\(commit ([0-9a-f]{40})\)", SCHEMA_FILE.read_text()).group(1)
    files = [p for p in KUBERAY.rglob("*") if p.is_file()]
    assert not [p for p in files if "token" in p.name.lower() or p.suffix in {".key", ".pem"}]
    for path in files:
        text = path.read_text().replace(commit, "")
        assert not re.search(r"^kind:\s*Secret\b", text, re.M), path
        words = re.sub(r"\S*[:./$\\]\S*", " ", text)  # paths, URLs, images, patterns are not tokens
        assert not TOKENISH.search(words), (path, TOKENISH.search(words))


def test_batch_roles_fit_the_cluster():
    """configs/gpu_cluster.yaml's roles: every custom resource a role asks for on a group that has enough."""
    job = manifest("rayjob_batch.yaml")
    module, args = entry_args(job)
    assert module == "agents.batch_reverse" and option_value(args, "--config") == "configs/gpu_cluster.yaml"
    assert role_problems(job) == []


def test_mdss_workers_fit_the_cluster():
    job = manifest("rayjob_mdss.yaml")
    module, args = entry_args(job)
    assert module == "training.train" and option_value(args, "--config") == "configs/mdss/finetune_cifar10_ddpm.yaml"
    assert mdss_problems(job) == []


def test_cluster_yaml_sizing_holds_on_kuberay_training_beside_serving():
    """cluster.yaml's gpu_large max_workers 6: one LLM and one VLM replica plus the SD1.5 MDSS run's 4 workers
    (configs/mdss/sd15_text2image.yaml) fit together; the CIFAR-10 run's workers fit beside the gpu_small roles."""
    from actors.capacity import capacity_problems
    from actors.config import ResourceConfig
    from actors.role_groups import role_groups
    from agents.config import ArpoConfig
    from core.config import load_config
    from training.config import TrainConfig

    shape = cluster_shape(manifest(RAYCLUSTER)["spec"])
    roles = role_groups(load_config(ArpoConfig, REPO / "configs/gpu_cluster.yaml"))
    for profile in ("configs/mdss/sd15_text2image.yaml", "configs/mdss/finetune_cifar10_ddpm.yaml"):
        train = load_config(TrainConfig, REPO / profile)
        bundle = train.worker_resources()
        workers = ResourceConfig(num_cpus=bundle["CPU"], num_gpus=bundle.get("GPU", 0), num_replicas=train.num_workers,
                                 custom_resources={k: v for k, v in bundle.items() if k not in ("CPU", "GPU")})
        assert capacity_problems({**roles, f"{profile} workers": workers}, shape) == [], profile


@pytest.mark.parametrize("name", JOBS)
def test_entrypoint_is_a_working_command_with_paths_on_the_shared_volume(name):
    assert entrypoint_problems(manifest(name)) == []


@pytest.mark.parametrize("name", JOBS)
def test_runtime_env_is_the_kuberay_job_runtime_env(name):
    assert runtime_env_problems(manifest(name)) == []


def test_kuberay_runtime_env_uploads_the_code_only_and_installs_the_dependencies():
    """deploy/kuberay/job_runtime_env.yaml: deploy/job_runtime_env.yaml's upload (tests/test_job_upload.py checks
    what that uploads) plus pip: pyproject's dependencies and its vllm and gguf extras, as cluster.yaml's
    setup_commands install them, less Ray (the image's); Ray accepts the whole env."""
    from ray.runtime_env import RuntimeEnv

    env, upload = yaml.safe_load(RUNTIME_ENV.read_text()), yaml.safe_load(UPLOAD_ENV.read_text())
    assert {k: env[k] for k in upload} == upload
    project = pyproject()["project"]
    extras = re.search(r"expectdiff\[([\w,]+)\]", " ".join(cluster_yaml()["setup_commands"])).group(1).split(",")
    wanted = [d for d in project["dependencies"] if not re.match(r"ray\b", d)]
    wanted += [d for extra in extras for d in project["optional-dependencies"][extra]]
    assert any(re.match(r"ray\[", d) for d in project["dependencies"])
    assert env["pip"]["packages"] == wanted
    assert set(env) <= RuntimeEnv.known_fields
    assert set(env["config"]) <= {"setup_timeout_seconds", "eager_install", "log_files"}
    RuntimeEnv(**{**env, "working_dir": str(REPO)})  # Ray's own validation of every field


def test_docs_create_the_secret_and_apply_every_manifest():
    commands = [c.argv for where, line in shell_lines(DOC) for c in split_commands(where, line)]
    secret = [a for a in commands if a[:4] == ("kubectl", "create", "secret", "generic")]
    assert secret and all(a[4] == SECRET for a in secret), secret
    assert all(any(arg.startswith(f"--from-file={TOKEN_KEY}=") for arg in a) for a in secret), secret
    applied = {a[a.index("-f") + 1] for a in commands if a[:2] == ("kubectl", "apply") and "-f" in a}
    assert applied == {f"deploy/kuberay/{name}" for name in MANIFESTS}, applied
    text = " ".join(DOC.read_text().split())
    assert "v1.7.0" in text and "never applied to a real Kubernetes cluster" in text
    assert "(kuberay.md)" in (REPO / "docs" / "cluster.md").read_text()


# ---------------------------------------------------------------- mutants: each check can fail

def _worker(doc: dict, name: str) -> dict:
    (spec_where, spec), = cluster_specs(doc)
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == name)


def _head(doc: dict) -> dict:
    (_, spec), = cluster_specs(doc)
    return spec["headGroupSpec"]


def _ctr(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def _entry(doc: dict, old: str, new: str) -> None:
    assert old in doc["spec"]["entrypoint"]
    doc["spec"]["entrypoint"] = doc["spec"]["entrypoint"].replace(old, new)


def _runtime(doc: dict, change) -> None:
    env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
    change(env)
    doc["spec"]["runtimeEnvYAML"] = yaml.safe_dump(env)


def _spec(doc):
    return next(cluster_specs(doc))[1]


def _add_secret(docs: list) -> None:
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}, "stringData": {TOKEN_KEY: "3f9a" * 11}})


MUTANTS = [
    # (id, file, change, check, words the problem must contain)
    ("misspelt worker field", RAYCLUSTER, lambda d: _rename(_worker(d, "gpu-large"), "maxReplicas", "maxReplica"),
     schema_problems, "'maxReplica'"),
    ("misspelt pod field", RAYCLUSTER, lambda d: _rename(_ctr(_head(d)), "volumeMounts", "volumeMount"),
     schema_problems, "'volumeMount'"),
    ("misspelt RayJob field", "rayjob_batch.yaml", lambda d: _rename(d["spec"], "shutdownAfterJobFinishes", "shutdownAfterJobFinish"),
     schema_problems, "'shutdownAfterJobFinish'"),
    ("unknown submissionMode", "rayjob_mdss.yaml", lambda d: d["spec"].update(submissionMode="K8SJobMode"),
     schema_problems, "'K8SJobMode'"),
    ("non-string rayStartParams value (schema)", RAYCLUSTER, lambda d: _head(d)["rayStartParams"].update({"num-cpus": 0}),
     schema_problems, "is not of type 'string'"),
    ("non-string rayStartParams value", "rayjob_batch.yaml", lambda d: _worker(d, "gpu-small")["rayStartParams"].update({"num-gpus": 1}),
     lambda d: ray_start_params_problems(_spec(d)), "num-gpus: 1 is not a string"),
    ("quantity typo", RAYCLUSTER, lambda d: _ctr(_head(d))["resources"]["limits"].update(memory="28 GiB"),
     schema_problems, "does not match"),
    ("wrong custom resource", RAYCLUSTER, lambda d: _worker(d, "gpu-large")["rayStartParams"].update(resources="'{\"gpu_larg\": 1}'"),
     lambda d: cluster_yaml_problems(_spec(d)), "gpu_larg"),
    ("wrong custom resource amount", RAYCLUSTER, lambda d: _worker(d, "gpu-small")["rayStartParams"].update(resources="'{\"gpu_small\": 2}'"),
     lambda d: cluster_yaml_problems(_spec(d)), "'gpu_small': 2"),
    ("Ray CPUs on the head", RAYCLUSTER, lambda d: _head(d)["rayStartParams"].pop("num-cpus"),
     lambda d: cluster_yaml_problems(_spec(d)), "head: Ray resources"),
    ("max workers", RAYCLUSTER, lambda d: _worker(d, "gpu-large").update(maxReplicas=5),
     lambda d: cluster_yaml_problems(_spec(d)), "max_workers 5"),
    ("container cpu", RAYCLUSTER, lambda d: _ctr(_worker(d, "gpu-small"))["resources"]["limits"].update(cpu="4"),
     lambda d: cluster_yaml_problems(_spec(d)), "cpu limit '4'"),
    ("no GPU limit", RAYCLUSTER, lambda d: _ctr(_worker(d, "gpu-large"))["resources"]["limits"].pop("nvidia.com/gpu"),
     lambda d: cluster_yaml_problems(_spec(d)), "nvidia.com/gpu limit None"),
    ("missing group", RAYCLUSTER, lambda d: _spec(d)["workerGroupSpecs"].pop(),
     lambda d: cluster_yaml_problems(_spec(d)), "worker groups"),
    ("metrics port", RAYCLUSTER, lambda d: _worker(d, "gpu-small")["rayStartParams"].update({"metrics-export-port": "9090"}),
     lambda d: cluster_yaml_problems(_spec(d)), "metrics-export-port '9090'"),
    ("idle timeout", RAYCLUSTER, lambda d: _spec(d)["autoscalerOptions"].update(idleTimeoutSeconds=60),
     lambda d: cluster_yaml_problems(_spec(d)), "idle_timeout_minutes"),
    ("rayVersion", RAYCLUSTER, lambda d: _spec(d).update(rayVersion="2.59.0"),
     lambda d: cluster_yaml_problems(_spec(d)), "rayVersion '2.59.0'"),
    ("image tag", "rayjob_mdss.yaml", lambda d: _ctr(_worker(d, "gpu-small")).update(image="rayproject/ray:2.59.0-py311-gpu"),
     image_problems, "2.59.0"),
    ("no secretName", RAYCLUSTER, lambda d: _spec(d)["authOptions"].pop("secretName"), token_problems, "secretName is None"),
    ("token auth off", "rayjob_batch.yaml", lambda d: _spec(d)["authOptions"].update(mode="disabled"), token_problems, "'disabled'"),
    ("literal token in env", RAYCLUSTER, lambda d: _ctr(_head(d)).update(env=[{"name": "RAY_AUTH_TOKEN", "value": "0f" * 16}]),
     token_problems, "RAY_AUTH_TOKEN not from the Secret"),
    ("token through the runtime env", "rayjob_mdss.yaml", lambda d: _runtime(d, lambda e: e.update(env_vars={"RAY_AUTH_TOKEN": "t"})),
     token_problems, "env_vars.RAY_AUTH_TOKEN"),
    ("a Secret in the files", "storage.yaml", _add_secret, token_problems, "a Secret"),
    ("another claim", "rayjob_batch.yaml", lambda d: _head(d)["template"]["spec"]["volumes"][0]["persistentVolumeClaim"].update(claimName="scratch"),
     volume_problems, "'scratch'"),
    ("claim not ReadWriteMany", "storage.yaml", lambda d: d["spec"].update(accessModes=["ReadWriteOnce"]), volume_problems, "ReadWriteMany"),
    ("roles' resource gone", "rayjob_batch.yaml", lambda d: _worker(d, "gpu-large")["rayStartParams"].update(resources="'{\"gpu_huge\": 1}'"),
     role_problems, "gpu_large"),
    ("too few gpu_small nodes for the roles", "rayjob_batch.yaml", lambda d: _worker(d, "gpu-small").update(maxReplicas=1),
     role_problems, "gpu_small"),
    ("MDSS workers do not all fit", "rayjob_mdss.yaml", lambda d: _worker(d, "gpu-small").update(maxReplicas=1),
     mdss_problems, "num_workers"),
    ("MDSS worker resource gone", "rayjob_mdss.yaml", lambda d: _worker(d, "gpu-small")["rayStartParams"].update(resources="'{\"gpu_tiny\": 1}'"),
     mdss_problems, "gpu_small"),
    ("relative --out", "rayjob_batch.yaml", lambda d: _entry(d, "--out /mnt/shared/outputs/run1", "--out outputs/run1"),
     entrypoint_problems, "is relative"),
    ("unknown flag", "rayjob_batch.yaml", lambda d: _entry(d, "--out ", "--outdir /mnt/shared/x --out "),
     entrypoint_problems, "has no option --outdir"),
    ("missing profile", "rayjob_batch.yaml", lambda d: _entry(d, "configs/gpu_cluster.yaml", "configs/gpu_clusters.yaml"),
     entrypoint_problems, "configs/gpu_clusters.yaml does not exist"),
    ("images off the volume", "rayjob_batch.yaml", lambda d: _entry(d, "--dir /mnt/shared/images", "--dir /data/images"),
     entrypoint_problems, "--dir /data/images: not on the shared volume"),
    ("relative run_dir", "rayjob_mdss.yaml", lambda d: _entry(d, "run_dir=/mnt/shared/runs", "run_dir=runs"),
     entrypoint_problems, "run_dir"),
    ("data path left to ${CIFAR10_DIR}", "rayjob_mdss.yaml", lambda d: _entry(d, " --set data.path=/mnt/shared/data/cifar10/train", ""),
     entrypoint_problems, "data.path"),
    ("runtime env drops an exclude", "rayjob_batch.yaml", lambda d: _runtime(d, lambda e: e["excludes"].remove(".venv/")),
     runtime_env_problems, "runtimeEnvYAML excludes"),
    ("runtime env without pip", "rayjob_mdss.yaml", lambda d: _runtime(d, lambda e: e.pop("pip")), runtime_env_problems, "runtimeEnvYAML pip"),
    ("working_dir not mounted in the submitter", "rayjob_batch.yaml", lambda d: d["spec"].pop("submitterPodTemplate"),
     runtime_env_problems, "not on the shared volume in the submitter Pod"),
    ("job cluster drifts from raycluster.yaml", "rayjob_mdss.yaml", lambda d: _worker(d, "gpu-small")["rayStartParams"].update({"num-gpus": "2"}),
     job_cluster_problems, "differs from deploy/kuberay/raycluster.yaml"),
    ("cluster kept after the job", "rayjob_batch.yaml", lambda d: d["spec"].update(shutdownAfterJobFinishes=False),
     kuberay_rule_problems, "ttlSecondsAfterFinished"),
    ("zero deadline", "rayjob_mdss.yaml", lambda d: d["spec"].update(activeDeadlineSeconds=0), kuberay_rule_problems, "activeDeadlineSeconds 0"),
    ("RayJob name too long", "rayjob_batch.yaml", lambda d: d["metadata"].update(name="expectdiff-" + "x" * 40),
     kuberay_rule_problems, "at most 47"),
    ("resources given twice", RAYCLUSTER, lambda d: _worker(d, "gpu-large").update(resources={"CPU": "4"}),
     kuberay_rule_problems, "resources both"),
    ("minReplicas above maxReplicas", RAYCLUSTER, lambda d: _worker(d, "gpu-small").update(minReplicas=9),
     kuberay_rule_problems, "minReplicas 9"),
    ("token auth on an old Ray", RAYCLUSTER, lambda d: _spec(d).update(rayVersion="2.51.0"), kuberay_rule_problems, "2.52.0"),
]


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_mutant_is_caught(mutant):
    _, name, change, check, expected = mutant
    docs = manifests(name)
    target = docs if change is _add_secret else next(d for d in docs if d.get("kind") != "Pod")
    if name == "storage.yaml" and change is not _add_secret:
        target = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert not [p for d in docs for p in check(d)], "the check already fails before the change"
    change(target)
    found = [p for d in docs for p in check(d)]
    assert any(expected in p for p in found), (expected, found)
