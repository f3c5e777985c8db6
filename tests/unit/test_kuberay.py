"""The KubeRay RayService: valid against the real CRDs, in sync with serve_config.yaml.

The CRDs (KubeRay v1.7.0) are read from ``$KUBERAY_CRD_DIR`` (``.ci/run`` sets it),
else from ``../shared/crds`` next to the repository. Without either the CRD tests
are skipped with the reason, except in CI, where that is a failure.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from deploy.kuberay import generate
from deploy.kuberay.validate import (
    CRD_DIR_ENV,
    MANIFEST,
    crd_dir,
    crd_errors,
    crd_schema,
    manifest_errors,
    serve_config_errors,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crds() -> Path:
    try:
        return crd_dir()
    except FileNotFoundError as exc:
        if os.environ.get(CRD_DIR_ENV) or os.environ.get("CI"):
            pytest.fail(f"{exc}. .ci/run sets {CRD_DIR_ENV}.", pytrace=False)
        pytest.skip(reason=f"{exc}. Set {CRD_DIR_ENV} to the KubeRay v1.7.0 CRD folder.")


@pytest.fixture(scope="module")
def schema(crds: Path) -> dict[str, Any]:
    return crd_schema(crds, "RayService")


@pytest.fixture
def manifest() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text())


def serve_config_v2(manifest: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(manifest["spec"]["serveConfigV2"])


def groups(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = manifest["spec"]["rayClusterConfig"]
    return {group["groupName"]: group for group in cluster["workerGroupSpecs"]}


def container(group: dict[str, Any]) -> dict[str, Any]:
    [only] = group["template"]["spec"]["containers"]
    return only


# --- the manifest against the CRDs ---------------------------------------------------


def test_manifest_is_valid(manifest: dict[str, Any], crds: Path) -> None:
    assert manifest_errors(manifest, crds) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets a dotted path (list indexes as numbers)."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = doc
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def _gpu_limit(value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:  # the key has dots: _set cannot reach it
        gpu = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]
        gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = value

    return mutate


CLUSTER = "spec.rayClusterConfig"
GPU = f"{CLUSTER}.workerGroupSpecs.1"


@pytest.mark.parametrize(
    "mutate,path,message",
    [
        (_set(f"{CLUSTER}.enableInTreeAutoscalng", True), CLUSTER, "enableInTreeAutoscalng"),
        (
            _set(f"{GPU}.template.spec.containers.0.imagee", "x"),
            f"{GPU}.template.spec.containers.0",
            "imagee",
        ),
        (_set(f"{CLUSTER}.headGroupSpec.rayStartParams.num-gpus", 0), "num-gpus", "string"),
        (_set(f"{GPU}.maxReplicas", 2**40), f"{GPU}.maxReplicas", "int32"),
        (_gpu_limit("one"), "nvidia.com/gpu", "does not match"),
        (_set(f"{GPU}.template.spec.tolerations.0.effect", 7), "effect", "string"),
        (_set(f"{CLUSTER}.autoscalerOptions.upscalingMode", "Fast"), "upscalingMode", "Fast"),
        (_set("metadata.name", "Image_Gen"), "metadata.name", "does not match"),
        (_set("metadata.uid", "x"), "metadata", "uid"),
        (_set("spec.managedBy", "ray.io/kuberay-operator"), "spec.managedBy", "CEL"),
        (
            _set(f"{CLUSTER}.headGroupSpec.template.spec.containers.0.ports.1.containerPort", 6379),
            "ports",
            "duplicate",
        ),
    ],
)
def test_bad_manifests_are_rejected(
    schema: dict[str, Any],
    manifest: dict[str, Any],
    mutate: Callable[[dict[str, Any]], None],
    path: str,
    message: str,
) -> None:
    assert crd_errors(manifest, schema) == []
    mutate(manifest)
    errors = crd_errors(manifest, schema)
    assert any(path in error and message in error for error in errors), errors


def test_crd_defaults_are_applied_before_validating(
    schema: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """minReplicas/maxReplicas are required but defaulted, as the API server does."""
    for group in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        del group["minReplicas"], group["maxReplicas"]
    assert crd_errors(manifest, schema) == []
    without = crd_errors(manifest, schema, defaults=False)
    assert any("'minReplicas' is a required property" in error for error in without), without


# --- serveConfigV2 is generated from serve_config.yaml ---------------------------------


def test_serve_config_v2_is_in_sync_with_serve_config() -> None:
    current, expected = generate.render_files()
    assert current == expected, (
        "deploy/kuberay/rayservice.yaml has drifted from serve_config.yaml; "
        "run: python -m deploy.kuberay.generate"
    )


def test_serve_config_v2_is_serve_config_plus_gpu_placement_and_s3(
    manifest: dict[str, Any],
) -> None:
    shipped = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    overrides = yaml.safe_load(generate.OVERRIDES.read_text())
    embedded = serve_config_v2(manifest)
    args = embedded["applications"][0]["args"]
    for model in args["models"]:
        assert model.pop("device") == "cuda"
        assert model["deployment"]["ray_actor_options"].pop("num_gpus") == 1
    assert args["storage"] == overrides["storage"]
    args["storage"] = shipped["applications"][0]["args"]["storage"]
    assert embedded == shipped


def test_drift_is_detected() -> None:
    current = MANIFEST.read_text()
    shipped = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    overrides = yaml.safe_load(generate.OVERRIDES.read_text())
    assert generate.render(current, shipped, overrides) == current
    shipped["applications"][0]["args"]["models"][0]["default_steps"] = 7
    assert generate.render(current, shipped, overrides) != current
    # A hand edit inside the generated block is drift too.
    edited = current.replace("max_batch_size: 16", "max_batch_size: 8", 1)
    assert generate.render(edited, yaml.safe_load((ROOT / "serve_config.yaml").read_text()),
                           overrides) != edited  # fmt: skip


def test_generator_rejects_unknown_override_keys() -> None:
    with pytest.raises(ValueError, match="every_modle"):
        generate.cluster_serve_config({"applications": []}, {"every_modle": {}})


# --- serveConfigV2 as Ray Serve reads it -----------------------------------------------


def test_serve_config_v2_is_valid_for_serve(manifest: dict[str, Any]) -> None:
    assert serve_config_errors(serve_config_v2(manifest)) == []


def _autoscaling(manifest: dict[str, Any], **changes: Any) -> dict[str, Any]:
    config = serve_config_v2(manifest)
    encoder = config["applications"][0]["args"]["encoder"]["deployment"]
    encoder["autoscaling_config"] |= changes
    return config


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"target_ongoing": 4}, "unknown autoscaling_config keys"),  # Ray ignores it
        ({"min_replicas": 5, "max_replicas": 2}, "min_replicas (5)"),
        ({"upscale_delay_s": -1}, "upscale_delay_s"),  # Ray's own AutoscalingConfig check
    ],
)
def test_every_autoscaling_config_is_checked(
    manifest: dict[str, Any], changes: dict[str, Any], message: str
) -> None:
    errors = serve_config_errors(_autoscaling(manifest, **changes))
    assert any(message in error for error in errors), errors


def test_per_deployment_overrides_are_checked_too(manifest: dict[str, Any]) -> None:
    config = serve_config_v2(manifest)
    config["applications"][0]["deployments"] = [
        {"name": "Encoder", "autoscaling_config": {"min_replicas": 1, "max_replica": 3}}
    ]
    errors = serve_config_errors(config)
    assert any("'Encoder'" in error and "max_replica" in error for error in errors), errors


def test_serve_deploy_schema_is_applied(manifest: dict[str, Any]) -> None:
    config = serve_config_v2(manifest)
    config["applications"][0]["import_path"] = "no-module-separator"
    assert any("import_path" in error for error in serve_config_errors(config))


# --- the cluster's shape ---------------------------------------------------------------


def _deployments(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    args = serve_config_v2(manifest)["applications"][0]["args"]
    found = {model["id"]: model["deployment"] for model in args["models"]}
    return found | {part: args[part]["deployment"] for part in ("encoder", "ingress")}


def test_no_replica_fits_on_the_head(manifest: dict[str, Any]) -> None:
    """The head offers 0 CPUs and 0 GPUs: a replica asking for neither could land there."""
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert "nvidia.com/gpu" not in container(head)["resources"]["limits"]
    for name, deployment in _deployments(manifest).items():
        options = deployment["ray_actor_options"]
        assert options.get("num_cpus", 1) > 0 or options.get("num_gpus", 0) > 0, name


def test_the_cluster_stores_in_s3_with_credentials_from_a_secret(
    manifest: dict[str, Any],
) -> None:
    """More than one pod: the shipped local store would be refused, the manifest's is S3."""
    from common.config import StorageConfig
    from storage.factory import check_store_fits_cluster

    args = serve_config_v2(manifest)["applications"][0]["args"]
    storage = StorageConfig.model_validate(args["storage"])
    assert storage.kind == "s3" and storage.bucket
    check_store_fits_cluster(storage, nodes=3)
    shipped = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    local = StorageConfig.model_validate(shipped["applications"][0]["args"]["storage"])
    with pytest.raises(ValueError, match="storage.kind: s3"):
        check_store_fits_cluster(local, nodes=3)
    for group in groups(manifest).values():  # where the replicas run
        env = {var["name"]: var for var in container(group)["env"]}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "value" not in env[name], name
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "imagegen-s3", name


def test_head_takes_no_gpu_and_no_replicas(manifest: dict[str, Any]) -> None:
    params = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]
    assert params["num-gpus"] == "0" and params["num-cpus"] == "0"


def test_gpu_and_cpu_worker_groups_autoscale(manifest: dict[str, Any]) -> None:
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    gpu, cpu = groups(manifest)["gpu-workers"], groups(manifest)["cpu-workers"]
    for group in (gpu, cpu):
        assert 0 <= group["minReplicas"] <= group["maxReplicas"]
    gpu_res = container(gpu)["resources"]
    assert gpu_res["limits"]["nvidia.com/gpu"] == gpu_res["requests"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu[
        "template"
    ]["spec"]["tolerations"]
    assert "nvidia.com/gpu" not in container(cpu)["resources"]["limits"]


def test_gpu_group_can_hold_every_model_at_max(manifest: dict[str, Any]) -> None:
    """Each model replica asks for a GPU; the GPU group can grow to hold them all."""
    models = serve_config_v2(manifest)["applications"][0]["args"]["models"]
    gpus = 0.0
    for model in models:
        deployment = model["deployment"]
        assert deployment["ray_actor_options"]["num_gpus"] > 0, model["id"]
        gpus += (
            deployment["autoscaling_config"]["max_replicas"]
            * (deployment["ray_actor_options"]["num_gpus"])
        )
    gpu = groups(manifest)["gpu-workers"]
    assert gpu["maxReplicas"] * int(container(gpu)["resources"]["limits"]["nvidia.com/gpu"]) >= gpus


def test_model_cache_volume_and_secrets(manifest: dict[str, Any]) -> None:
    gpu = groups(manifest)["gpu-workers"]
    volumes = {v["name"]: v for v in gpu["template"]["spec"]["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"]["claimName"] == "imagegen-model-cache"
    mounts = {m["name"]: m["mountPath"] for m in container(gpu)["volumeMounts"]}
    env = {e["name"]: e for e in container(gpu)["env"]}
    assert env["HF_HOME"]["value"].startswith(mounts["model-cache"] + "/")
    assert env["IMAGEGEN_CACHE"]["value"].startswith(mounts["model-cache"] + "/")
    pvc = yaml.safe_load((MANIFEST.parent / "model-cache-pvc.yaml").read_text())
    assert pvc["metadata"]["name"] == "imagegen-model-cache"

    secrets = {
        doc["metadata"]["name"]: doc["stringData"]
        for doc in yaml.safe_load_all((MANIFEST.parent / "secrets.example.yaml").read_text())
    }
    for group in groups(manifest).values():
        for var in container(group)["env"]:
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:  # every referenced Secret key is in the example
                assert ref["key"] in secrets[ref["name"]] or ref.get("optional"), var
        names = {var["name"] for var in container(group)["env"]}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "IMAGEGEN_URL_SIGNING_KEY"} <= names


def test_every_pod_turns_on_rays_serving_path_switches(manifest: dict[str, Any]) -> None:
    """Ray reads them at start in each process of each node: head and workers alike,
    with the values the README's launcher sets (serve_app/launcher.py)."""
    from serve_app.launcher import SWITCHES

    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    for group in [head, *groups(manifest).values()]:
        env = {var["name"]: var.get("value") for var in container(group)["env"]}
        assert {name: env.get(name) for name in SWITCHES} == SWITCHES, group.get("groupName")


def test_ray_versions_match(manifest: dict[str, Any]) -> None:
    """The Docker base image, rayVersion, the pyproject pin and the tested Ray agree."""
    version = manifest["spec"]["rayClusterConfig"]["rayVersion"]
    assert version == ray.__version__
    base = re.search(r"^FROM rayproject/ray:(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert base is not None and base.group(1) == f"{version}-py311-gpu"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    major_minor = ".".join(version.split(".")[:2])
    assert any(d.startswith("ray[serve]") and f">={major_minor}" in d for d in deps)
    images = {container(g)["image"] for g in groups(manifest).values()}
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    images.add(head["containers"][0]["image"])
    assert len(images) == 1  # one image for every pod


def test_validator_leaves_the_manifest_untouched(
    schema: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """Defaults are filled in on a copy."""
    before = copy.deepcopy(manifest)
    crd_errors(manifest, schema)
    assert manifest == before
