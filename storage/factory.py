"""The one place that turns ``StorageConfig`` into a store (the encoder and ingress use it)."""

from __future__ import annotations

from typing import Any

from common.config import StorageConfig
from storage.base import OUTPUTS_PREFIX, ImageStore
from storage.local import LocalImageStore, Sweeper
from storage.signing import UrlSigner


def make_store(config: StorageConfig | dict[str, Any], signing_key: str) -> ImageStore:
    """A local store signs its own URLs with ``signing_key``; S3 presigns them itself."""
    config = StorageConfig.model_validate(config)
    if config.kind == "s3":
        from storage.s3 import S3ImageStore

        return S3ImageStore(config)
    return LocalImageStore(config.local_dir, UrlSigner(signing_key, config.url_ttl_s))


def check_store_fits_cluster(config: StorageConfig, nodes: int) -> None:
    """A local folder is one node's: with more nodes, ``url`` images written by an
    encoder on one node are missing on the others, and so are job records."""
    if config.kind == "local" and nodes > 1:
        raise ValueError(
            f"storage.kind is 'local' but this Ray cluster has {nodes} nodes: a local "
            "folder is visible on one node only, so images and jobs written on one node "
            "would be missing on the others. Use storage.kind: s3 (AWS S3, MinIO or GCS "
            "interop) for more than one node; see docs/deploy.md."
        )


def start_expiry(store: ImageStore, config: StorageConfig) -> Sweeper | None:
    """Local outputs need a sweeper; S3 expires them with the lifecycle rule it installed."""
    if isinstance(store, LocalImageStore):
        return Sweeper(store, OUTPUTS_PREFIX, config.url_ttl_s, config.sweep_interval_s).start()
    return None
