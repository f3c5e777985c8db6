"""Image storage: one ``ImageStore`` protocol, a local-directory and an S3-compatible backend."""

from deployments.storage.base import (
    ImageStore,
    ObjectInfo,
    StorageUnavailable,
    content_type_for,
    is_image_key,
    output_key,
    valid_key,
)
from deployments.storage.factory import make_store, start_expiry
from deployments.storage.local import FILES_ROUTE, LocalImageStore, Sweeper
from deployments.storage.signing import UrlSigner

__all__ = [
    "FILES_ROUTE",
    "ImageStore",
    "LocalImageStore",
    "ObjectInfo",
    "StorageUnavailable",
    "Sweeper",
    "UrlSigner",
    "content_type_for",
    "is_image_key",
    "make_store",
    "output_key",
    "start_expiry",
    "valid_key",
]
