"""The typed application builder referenced by ``serve_config.yaml``.

``build_app(args)`` validates the YAML ``args`` block, creates one model
deployment per configured model and one encoder, and binds the ingress to them.
Nothing is bound at import time.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any

from ray import serve
from ray.serve import Application
from starlette.applications import Starlette

from common.config import ImageServingArgs
from deployments.encoder.server import Encoder
from deployments.model.request_mode.engine import EngineFactory
from deployments.model.server import ModelServer
from serve_app.ingress import Ingress
from serve_app.routes import asgi_app
from storage.factory import check_store_fits_cluster

logger = logging.getLogger("imagegen.app")

SIGNING_KEY_ENV = "IMAGEGEN_URL_SIGNING_KEY"


def url_signing_key() -> str:
    """The key for image URLs: from the environment, else a fresh one per deploy."""
    key = os.environ.get(SIGNING_KEY_ENV)
    if key:
        return key
    logger.warning(
        "%s is not set; image URLs use a random key and stop working after a redeploy",
        SIGNING_KEY_ENV,
    )
    return secrets.token_hex(32)


def alive_nodes() -> int:
    """Alive nodes of the Ray cluster this process is connected to (0: none)."""
    import ray

    if not ray.is_initialized():
        return 0
    return sum(1 for node in ray.nodes() if node.get("Alive"))


class IngressDeployment(Ingress):
    """The ingress as a Serve deployment: :class:`Ingress` plus its HTTP app."""

    def __init__(self, args: ImageServingArgs | dict[str, Any], *rest: Any) -> None:
        # At every replica start too: nodes may have joined since the app was built.
        check_store_fits_cluster(ImageServingArgs.model_validate(args).storage, alive_nodes())
        super().__init__(args, *rest)

    def __serve_build_asgi_app__(self) -> Starlette:
        return asgi_app(self)


def build_app(args: ImageServingArgs | dict[str, Any]) -> Application:
    """The whole app from its args: what ``serve run`` calls (a Serve application
    builder must take exactly one parameter)."""
    return build_app_with_engine(args, None)


def build_app_with_engine(
    args: ImageServingArgs | dict[str, Any], engine_factory: EngineFactory | None
) -> Application:
    """:func:`build_app` with ``engine_factory`` replacing the diffusers engine in every
    model deployment (tests inject faults through it)."""
    config = ImageServingArgs.model_validate(args)
    check_store_fits_cluster(config.storage, alive_nodes())
    signing_key = url_signing_key()
    encoder = (
        serve.deployment(Encoder)
        .options(name="Encoder", **config.encoder.deployment.to_serve_options())
        .bind(config.storage.model_dump(mode="json"), signing_key)
    )
    models = {}
    for model in config.models:
        deployment = serve.deployment(ModelServer).options(
            name=model.deployment_name(),
            user_config=model.batching.model_dump(),
            **_with_defaults(
                model.deployment.to_serve_options(),
                # Requests waiting for the running batch count as ongoing; at Ray's
                # default of 5 a batch could never grow past 5.
                max_ongoing_requests=4 * model.batching.max_batch_size,
            ),
        )
        # The model replicas send their pixels to the encoder themselves (never through
        # the ingress) and answer with encoded images only.
        models[model.id] = deployment.bind(
            model.model_dump(mode="json"), engine_factory, encoder=encoder
        )
    ingress_cls = serve.ingress()(IngressDeployment)
    return (
        serve.deployment(ingress_cls)
        .options(name="Ingress", **config.ingress.deployment.to_serve_options())
        .bind(config.model_dump(mode="json"), models, encoder, signing_key)
    )


def _with_defaults(options: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    return {**defaults, **options}
