"""The S3 store's own duties, against the real moto_server process: lifecycle, config, errors."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config
from pydantic import ValidationError

from common.config import StorageConfig
from common.errors import StorageUnavailable
from storage.base import output_key
from storage.factory import make_store
from storage.s3 import S3ImageStore
from tests.conftest import s3_client
from tests.support.s3server import free_port
from tests.unit.conftest import SIGNING_KEY, s3_config


def lifecycle_rules(endpoint: str, bucket: str) -> list[dict]:
    return s3_client(endpoint).get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]


@pytest.fixture
def fresh_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    name = f"lc-{request.node.name.lower().replace('_', '-')[:40]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


def test_factory_builds_s3_and_keys_live_under_the_prefix(s3_endpoint: str, s3_bucket: str) -> None:
    config = s3_config(s3_endpoint, s3_bucket)
    store = make_store(config, SIGNING_KEY)
    assert isinstance(store, S3ImageStore)
    store.put("outputs/abcdefghijklmnop.png", b"x", "image/png")
    listed = s3_client(s3_endpoint).list_objects_v2(Bucket=s3_bucket, Prefix=config.prefix)
    assert [item["Key"] for item in listed["Contents"]] == [
        f"{config.prefix}outputs/abcdefghijklmnop.png"
    ]


def test_lifecycle_rule_expires_outputs_and_keeps_other_rules(
    s3_endpoint: str, fresh_bucket: str
) -> None:
    foreign = {
        "ID": "someone-elses",
        "Filter": {"Prefix": "logs/"},
        "Status": "Enabled",
        "Expiration": {"Days": 30},
    }
    s3_client(s3_endpoint).put_bucket_lifecycle_configuration(
        Bucket=fresh_bucket, LifecycleConfiguration={"Rules": [foreign]}
    )
    config = s3_config(s3_endpoint, fresh_bucket, url_ttl_s=3600)
    S3ImageStore(config)
    S3ImageStore(config)  # a second replica starting changes nothing
    rules = {rule["ID"]: rule for rule in lifecycle_rules(s3_endpoint, fresh_bucket)}
    assert set(rules) == {
        "someone-elses",
        f"imagegen-expire-{config.prefix}outputs".replace("/", "-"),
    }
    ours = next(rule for rid, rule in rules.items() if rid != "someone-elses")
    assert ours["Filter"]["Prefix"] == f"{config.prefix}outputs/"
    assert ours["Expiration"]["Days"] == 1 and ours["Status"] == "Enabled"


def test_lifecycle_days_round_up_from_the_url_ttl(s3_endpoint: str, fresh_bucket: str) -> None:
    store = S3ImageStore(s3_config(s3_endpoint, fresh_bucket, url_ttl_s=2 * 86400 + 1))
    [rule] = lifecycle_rules(s3_endpoint, fresh_bucket)
    assert rule["Expiration"]["Days"] == 3 == store.lifecycle_rule()["Expiration"]["Days"]


def test_lifecycle_can_be_left_to_the_operator(s3_endpoint: str, fresh_bucket: str) -> None:
    S3ImageStore(s3_config(s3_endpoint, fresh_bucket, manage_lifecycle=False))
    with pytest.raises(s3_client(s3_endpoint).exceptions.ClientError):
        lifecycle_rules(s3_endpoint, fresh_bucket)


def test_a_missing_bucket_fails_at_startup_with_a_reason(s3_endpoint: str) -> None:
    with pytest.raises(StorageUnavailable, match="no-such-bucket.*AWS_"):
        S3ImageStore(s3_config(s3_endpoint, "no-such-bucket"))


def test_an_unreachable_store_is_storage_unavailable(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3ImageStore(s3_config(s3_endpoint, s3_bucket))
    store.client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(StorageUnavailable):
        store.get("outputs/abcdefghijklmnop.png")


def test_public_endpoint_is_used_for_presigned_urls(s3_endpoint: str, s3_bucket: str) -> None:
    config = s3_config(s3_endpoint, s3_bucket, public_endpoint_url="https://images.example.com")
    store = S3ImageStore(config)
    key = output_key("png")
    url = urlsplit(store.presign(key, 600))
    assert (url.scheme, url.netloc) == ("https", "images.example.com")
    assert url.path == f"/{s3_bucket}/{config.prefix}{key}"
    query = parse_qs(url.query)
    assert query["X-Amz-Expires"] == ["600"]
    assert query["X-Amz-Credential"][0].startswith("imagegen-test-key/")


@pytest.mark.parametrize("secret_key", ["aws_access_key_id", "secret_access_key", "credentials"])
def test_credentials_in_config_are_refused(secret_key: str) -> None:
    with pytest.raises(ValidationError, match="environment"):
        StorageConfig.model_validate({"kind": "s3", "bucket": "b-1", secret_key: "x"})


@pytest.mark.parametrize(
    "config,message",
    [
        ({"kind": "s3"}, "needs a bucket"),
        ({"kind": "local", "bucket": "abc"}, "only apply to storage kind 's3'"),
        ({"kind": "s3", "bucket": "abc", "local_dir": "/tmp"}, "local_dir"),
        ({"kind": "s3", "bucket": "abc", "prefix": "../x"}, "prefix"),
        ({"kind": "gcs"}, "kind"),
        ({"kind": "s3", "bucket": "abc", "url_ttl_s": 8 * 86400}, "url_ttl_s"),
    ],
)
def test_bad_storage_config_fails_with_a_reason(config: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        StorageConfig.model_validate(config)


@pytest.mark.parametrize("prefix,normal", [("imagegen", "imagegen/"), ("/a/b/", "a/b/"), ("", "")])
def test_prefix_is_normalised(prefix: str, normal: str) -> None:
    assert StorageConfig(kind="s3", bucket="abc", prefix=prefix).prefix == normal
