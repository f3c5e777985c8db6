"""The S3-compatible store (AWS S3, MinIO, GCS interop) through boto3.

boto3 is imported here only, when ``storage.kind`` is ``s3``, so the local default
never loads it. Credentials come from boto3's default chain (environment, web
identity, instance profile), never from the config. URLs are SigV4 presigned GETs
that the store itself expires; expired outputs' bytes are removed by a bucket
lifecycle rule on ``<prefix>outputs/`` that the store installs at start.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from common.errors import StorageUnavailable
from storage.base import (
    OUTPUTS_PREFIX,
    ObjectInfo,
    Versioned,
    check_key,
    check_metadata,
    check_prefix,
    valid_key,
)

if TYPE_CHECKING:
    from common.config import StorageConfig

logger = logging.getLogger("imagegen.storage")

_MISSING = {"404", "NoSuchKey", "NotFound"}
# A conditional PUT that lost: 412 when the ETag moved, 409 when a concurrent
# conditional write to the same key is in progress (S3 asks the loser to retry), and
# 404 when the object it meant to replace was deleted meanwhile.
_LOST_RACE = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", *_MISSING}
DAY_S = 24 * 3600


class S3ImageStore:
    """Objects under ``<prefix><key>`` in one bucket."""

    kind = "s3"

    def __init__(self, config: StorageConfig) -> None:
        import boto3
        from botocore.config import Config

        assert config.bucket is not None  # StorageConfig guarantees it for kind s3
        self.bucket = config.bucket
        self.prefix = config.prefix
        self.url_ttl_s = config.url_ttl_s
        client_config = Config(
            signature_version="s3v4",
            s3={"addressing_style": config.addressing_style},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            # boto3 >= 1.36 adds CRC checksums that GCS interop and older MinIO refuse.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        self.client = session.client(
            "s3", endpoint_url=config.endpoint_url, region_name=config.region, config=client_config
        )
        self._presigner = self.client
        if config.public_endpoint_url:
            self._presigner = session.client(
                "s3",
                endpoint_url=config.public_endpoint_url,
                region_name=config.region,
                config=client_config,
            )
        self._check_bucket(config)
        if config.manage_lifecycle:
            self.ensure_output_lifecycle()

    def _check_bucket(self, config: StorageConfig) -> None:
        """Fail at startup, with a reason, when the bucket is missing or unreachable."""
        where = config.endpoint_url or "AWS S3"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - re-raised with the operator's context
            raise StorageUnavailable(
                f"S3 bucket {self.bucket!r} at {where} is not usable: {exc}. Check the bucket "
                "name, endpoint_url, region, and the AWS_* credentials in the environment."
            ) from exc

    def _full(self, key: str) -> str:
        return self.prefix + key

    def _call(self, operation: str, **params: Any) -> Any:
        """Run one S3 call; missing objects give ``None``, other failures StorageUnavailable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise StorageUnavailable(f"S3 {operation} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 {operation} failed: {exc}") from exc

    def put(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        self._call(
            "put_object",
            Key=self._full(check_key(key)),
            Body=data,
            ContentType=content_type,
            Metadata=check_metadata(metadata),
        )

    def get(self, key: str) -> bytes | None:
        found = self.get_versioned(key)
        return None if found is None else found.data

    def _object(self, operation: str, key: str) -> Any:
        """``get_object`` or ``head_object``; ``None`` for a missing object or bad key."""
        return self._call(operation, Key=self._full(key)) if valid_key(key) else None

    def head(self, key: str) -> ObjectInfo | None:
        response = self._object("head_object", key)
        if response is None:
            return None
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            content_type=response.get("ContentType", "application/octet-stream"),
            last_modified=response["LastModified"].timestamp(),
            metadata=dict(response.get("Metadata", {})),
        )

    def get_versioned(self, key: str) -> Versioned | None:
        response = self._object("get_object", key)
        if response is None:
            return None
        return Versioned(response["Body"].read(), response["ETag"])

    def put_if(self, key: str, data: bytes, content_type: str, if_match: str | None) -> str | None:
        """S3 conditional writes: ``If-Match: <etag>`` to replace, ``If-None-Match: *``
        to create. A lost race (412/409) is ``None``; the object is left as it was."""
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if if_match is None else {"IfMatch": if_match}
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=self._full(check_key(key)),
                Body=data,
                ContentType=content_type,
                **condition,
            )
        except ClientError as exc:
            error = exc.response.get("Error", {}).get("Code")
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
            if error in _LOST_RACE or status in _LOST_RACE:
                return None
            raise StorageUnavailable(f"S3 conditional put_object failed: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - botocore transport errors
            raise StorageUnavailable(f"S3 conditional put_object failed: {exc}") from exc
        return str(response["ETag"])

    def delete(self, key: str) -> None:
        if valid_key(key):
            self._call("delete_object", Key=self._full(key))

    def list(self, prefix: str, start_after: str | None = None, limit: int = 1000) -> list[str]:
        params: dict[str, Any] = {"Prefix": self._full(check_prefix(prefix))}
        if start_after is not None:
            params["StartAfter"] = self._full(start_after)
        keys: list[str] = []
        while len(keys) < limit:
            page = self._call("list_objects_v2", MaxKeys=min(1000, limit - len(keys)), **params)
            keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
            if not page.get("IsTruncated"):
                break
            params["ContinuationToken"] = page["NextContinuationToken"]
        return keys[:limit]

    def presign(self, key: str, ttl_s: int, base_url: str | None = None) -> str:
        """A SigV4 presigned GET; S3 itself refuses it after ``ttl_s`` (at most 7 days)."""
        return self._presigner.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._full(check_key(key))},
            ExpiresIn=ttl_s,
        )

    def lifecycle_rule(self) -> dict[str, Any]:
        """Expire outputs a whole day after their URLs do (S3 lifecycle counts in days)."""
        return {
            "ID": f"imagegen-expire-{self.prefix}{OUTPUTS_PREFIX}".replace("/", "-").strip("-"),
            "Filter": {"Prefix": self._full(OUTPUTS_PREFIX)},
            "Status": "Enabled",
            "Expiration": {"Days": max(1, math.ceil(self.url_ttl_s / DAY_S))},
        }

    def ensure_output_lifecycle(self) -> None:
        """Add or update our rule, keeping every other rule on the bucket."""
        from botocore.exceptions import ClientError

        rule = self.lifecycle_rule()
        try:
            existing = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket)["Rules"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
                raise StorageUnavailable(f"cannot read the bucket lifecycle: {exc}") from exc
            existing = []
        if rule in existing:
            return
        rules = [r for r in existing if r.get("ID") != rule["ID"]] + [rule]
        try:
            self.client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": rules}
            )
        except ClientError as exc:
            raise StorageUnavailable(
                f"cannot install the lifecycle rule that expires url outputs: {exc}. Grant "
                "s3:PutLifecycleConfiguration, or set storage.manage_lifecycle: false and "
                f"expire '{self._full(OUTPUTS_PREFIX)}' yourself."
            ) from exc
        logger.info("installed lifecycle rule %s on bucket %s", rule["ID"], self.bucket)
