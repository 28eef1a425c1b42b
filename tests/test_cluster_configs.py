"""The cluster launcher and KubeRay configs: required keys, GPUs, Ray version, entrypoint."""

import json
import shlex
from pathlib import Path

import pytest
import ray  # only for __version__
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "platform" / "cluster"


def load(name):
    return yaml.safe_load((CLUSTER / name).read_text())


def image_ray_version(image):
    """``rayproject/ray:2.60.0-py311-gpu`` -> ``2.60.0``."""
    repository, tag = image.rsplit(":", 1)
    assert repository == "rayproject/ray", image
    return tag.split("-", 1)[0]


def test_launcher_required_keys_and_a100_workers():
    config = load("a100.yaml")
    required = {"cluster_name", "max_workers", "provider", "auth", "docker", "available_node_types",
                "head_node_type", "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"}
    assert required <= set(config), required - set(config)
    assert config["provider"]["type"] == "aws"
    node_types = config["available_node_types"]
    assert config["head_node_type"] in node_types
    workers = {name: t for name, t in node_types.items() if name != config["head_node_type"]}
    a100 = [t for t in workers.values() if t["resources"].get("accelerator_type:A100") == 1]
    assert a100 and all(t["resources"]["GPU"] >= 1 for t in a100)
    assert a100[0]["node_config"]["InstanceType"] == "p4d.24xlarge"
    assert all(t["max_workers"] <= config["max_workers"] for t in workers.values())
    assert any("pip install" in c and "transcenter" in c for c in config["setup_commands"])


def test_launcher_dashboard_is_local_only():
    commands = " ".join(load("a100.yaml")["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in commands and "0.0.0.0" not in commands


def test_launcher_matches_ray_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(load("a100.yaml"), schema)


def test_images_match_installed_ray():
    launcher, job = load("a100.yaml"), load("rayjob.yaml")
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    images = [launcher["docker"]["image"]] + [c["image"] for p in pods for c in p["spec"]["containers"]]
    assert {image_ray_version(i) for i in images} == {ray.__version__}
    assert all(i.endswith("-gpu") for i in images)
    assert cluster["rayVersion"] == ray.__version__


def test_rayjob_fields_and_gpu_limits():
    job = load("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert {"working_dir", "pip"} <= set(runtime_env)
    args = shlex.split(spec["entrypoint"])
    assert args[:2] == ["python", "studies/heatmap_size.py"]
    assert args[args.index("--preset") + 1] == "paper"
    assert args[args.index("--storage-path") + 1].startswith("s3://")
    # A lost head fails the job; KubeRay resubmits the same command, which must then resume.
    assert spec["backoffLimit"] >= 1 and args[args.index("--resume") + 1] == "auto"
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert groups
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            limits, requests = container["resources"]["limits"], container["resources"]["requests"]
            assert limits["nvidia.com/gpu"] >= 1 and requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert all("nvidia.com/gpu" not in c["resources"]["limits"] for c in head)


def test_entrypoint_names_an_existing_study():
    """The RayJob's entrypoint runs a study script that exists in this repository's studies/."""
    script = shlex.split(load("rayjob.yaml")["spec"]["entrypoint"])[1]
    assert (ROOT / script).is_file(), f"the RayJob entrypoint names {script}, which does not exist"
    assert (ROOT / script).resolve().parent == ROOT / "studies", script


def test_entrypoints_are_valid_study_commands_on_object_storage_and_postgres():
    """The documented commands parse as the study CLI reads them: S3 storage, a PostgreSQL Optuna
    URL without a password (PGPASSWORD comes from the cluster's secrets)."""
    from transcenter.platform.cli import build_parser
    from transcenter.store.uri import dialect, split_password

    header = (CLUSTER / "a100.yaml").read_text().split("cluster_name:", 1)[0]
    launcher = " ".join(line.lstrip("# ").rstrip("\\ ") for line in header.splitlines()
                        if "studies/heatmap_size.py" in line or line.lstrip("# ").startswith("--"))
    for command in (load("rayjob.yaml")["spec"]["entrypoint"], launcher):
        args = shlex.split(command)
        parsed = build_parser("heatmap_size", "", asha=False).parse_args(
            args[args.index("studies/heatmap_size.py") + 1:])
        assert parsed.storage_path.startswith("s3://")
        assert dialect(parsed.optuna_url) == "postgresql"
        assert split_password(parsed.optuna_url)[1] is None
    head = load("rayjob.yaml")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert any(e["name"] == "PGPASSWORD" and "secretKeyRef" in e["valueFrom"]
               for e in head["containers"][0]["env"])
