"""Config is strict: typos and impossible settings fail at startup, with a reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from common.config import ImageServingArgs
from common.model_config import DeploymentOptions, ModelConfig

ROOT = Path(__file__).resolve().parents[2]


def tiny(**overrides: Any) -> dict[str, Any]:
    return {"id": "tiny", "source": "builtin:tiny-sdxl", **overrides}


def test_serve_run_can_build_the_app_from_serve_config_yaml() -> None:
    """What ``serve run serve_config.yaml`` does: import the builder, call it through
    Serve's own builder check (one parameter only), and get an application."""
    from ray._common.utils import import_attr
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    doc = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    [app] = doc["applications"]
    builder = import_attr(app["import_path"])
    built = call_user_app_builder_with_args_if_necessary(builder, app["args"])
    assert isinstance(built, Application)


def test_serve_config_yaml_is_valid() -> None:
    doc = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    [app] = doc["applications"]
    assert app["import_path"] == "serve_app.app:build_app"
    args = ImageServingArgs.model_validate(app["args"])
    assert args.resolve_default() == "tiny-sdxl"
    assert args.model_names()["dall-e-3"] == "tiny-sdxl"
    # Every deployment autoscales, each with the bounds its role needs.
    bounds = [
        (options.autoscaling_config or {}).get(key)
        for options in (
            *(model.deployment for model in args.models),
            args.encoder.deployment,
            args.ingress.deployment,
        )
        for key in ("min_replicas", "max_replicas", "target_ongoing_requests")
    ]
    assert bounds == [1, 2, 16, 0, 2, 16, 0, 2, 16, 0, 2, 16, 1, 4, 8, 1, 4, 64]
    # Several models, each with its own defaults; all but the first scale to zero.
    always_on, on_demand, flux, qwen = args.models
    assert not always_on.deployment.scales_to_zero() and on_demand.deployment.scales_to_zero()
    assert (on_demand.default_steps, on_demand.default_guidance) == (4, 0.0)
    assert args.model_names()["tiny-fast"] == on_demand.id
    assert flux.known_family() == "flux" and flux.deployment.scales_to_zero()
    assert qwen.known_family() == "qwen_image" and qwen.deployment.scales_to_zero()
    # Every default model fits a 2-core machine at once (one replica each).
    cpus = sum(
        (options.ray_actor_options or {}).get("num_cpus", 1)
        for options in (
            *(model.deployment for model in args.models),
            args.encoder.deployment,
            args.ingress.deployment,
        )
    )
    assert cpus <= 2


def test_scales_to_zero() -> None:
    assert DeploymentOptions(autoscaling_config={"min_replicas": 0}).scales_to_zero()
    assert not DeploymentOptions(autoscaling_config={"max_replicas": 3}).scales_to_zero()
    assert not DeploymentOptions().scales_to_zero()


def test_typo_is_rejected() -> None:
    with pytest.raises(ValidationError, match="default_step"):
        ModelConfig.model_validate(tiny(default_step=4))


def test_unknown_autoscaling_key_is_rejected() -> None:
    with pytest.raises(ValidationError, match="target_ongoing"):
        DeploymentOptions(autoscaling_config={"min_replicas": 1, "target_ongoing": 2})


def test_min_above_max_replicas_is_rejected() -> None:
    with pytest.raises(ValidationError, match="min_replicas"):
        DeploymentOptions(autoscaling_config={"min_replicas": 3, "max_replicas": 2})


def test_replicas_and_autoscaling_are_exclusive() -> None:
    with pytest.raises(ValidationError, match="not both"):
        DeploymentOptions(num_replicas=1, autoscaling_config={"min_replicas": 1})


def test_one_request_must_fit_in_one_batch() -> None:
    with pytest.raises(ValidationError, match="one request must fit"):
        ModelConfig.model_validate(tiny(batching={"max_batch_size": 4}))


def test_ongoing_requests_must_let_batches_fill() -> None:
    with pytest.raises(ValidationError, match="never fill"):
        ModelConfig.model_validate(tiny(deployment={"max_ongoing_requests": 5}))


def test_model_names_must_be_unique() -> None:
    models = [tiny(aliases=["dall-e-3"]), {"id": "other", "source": "x", "aliases": ["dall-e-3"]}]
    with pytest.raises(ValidationError, match="dall-e-3"):
        ImageServingArgs(models=models)


def test_default_model_must_exist() -> None:
    with pytest.raises(ValidationError, match="default_model"):
        ImageServingArgs(models=[tiny()], default_model="nope")


def test_default_model_may_be_an_alias() -> None:
    args = ImageServingArgs(models=[tiny(aliases=["dall-e-3"])], default_model="dall-e-3")
    assert args.resolve_default() == "tiny"


def test_deployment_name_is_safe() -> None:
    assert (
        ModelConfig.model_validate(tiny(id="org/model:v1")).deployment_name()
        == "Model:org_model_v1"
    )


def test_torch_threads_follow_the_replica_cpus_unless_set() -> None:
    def config(**kw: object) -> ModelConfig:
        return ModelConfig.model_validate(tiny(**kw))

    assert config().threads() == 1  # Serve reserves 1 CPU by default
    assert config(deployment={"ray_actor_options": {"num_cpus": 4}}).threads() == 4
    assert config(deployment={"ray_actor_options": {"num_cpus": 2.5}}).threads() == 2
    assert config(deployment={"ray_actor_options": {"num_cpus": 0.25}}).threads() == 1
    assert config(torch_threads=3, deployment={"ray_actor_options": {"num_cpus": 8}}).threads() == 3
