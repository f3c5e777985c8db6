"""``response_format=url`` end to end on both backends: fetch, expiry, forgery, traversal."""

from __future__ import annotations

import calendar
import http.client
import io
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest
from PIL import Image

from storage.signing import UrlSigner
from tests.conftest import s3_client
from tests.integration.conftest import S3_URL_TTL_S, TEST_SIGNING_KEY
from tests.support.http import assert_error


def test_s3_url_output_is_a_presigned_url_fetched_with_plain_http(
    s3_client_sdk: openai.OpenAI, s3_endpoint: str, s3_bucket: str
) -> None:
    started = time.time()
    result = s3_client_sdk.images.generate(
        prompt="a fox", n=2, size="512x512", response_format="url", output_format="webp"
    )
    for item in result.data:
        assert item.url and item.url.startswith(f"{s3_endpoint}/{s3_bucket}/e2e/outputs/")
        response = httpx.get(item.url, timeout=30)  # no credentials, just the URL
        assert response.status_code == 200 and response.headers["content-type"] == "image/webp"
        assert Image.open(io.BytesIO(response.content)).size == (512, 512)
        # moto does not enforce presigned expiry (S3 does): check what the URL tells S3.
        query = parse_qs(urlsplit(item.url).query)
        assert query["X-Amz-Expires"] == [str(S3_URL_TTL_S)]
        signed_at = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
        assert abs(signed_at - started) < 120
        assert query["X-Amz-SignedHeaders"] == ["host"] and len(query["X-Amz-Signature"][0]) == 64


def test_s3_app_installed_the_output_expiry_rule(
    s3_client_sdk: openai.OpenAI, s3_endpoint: str, s3_bucket: str
) -> None:
    rules = s3_client(s3_endpoint).get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    prefixes = {rule["Filter"]["Prefix"]: rule for rule in rules}
    assert prefixes["e2e/outputs/"]["Expiration"]["Days"] == 1


def test_local_url_expiry_is_enforced(client: openai.OpenAI) -> None:
    url = client.images.generate(prompt="a fox", response_format="url").data[0].url
    assert url is not None and httpx.get(url, timeout=30).status_code == 200
    parts = urlsplit(url)
    key = parts.path.split("/v1/images/files/", 1)[1]
    # A signature the server would have made two hours ago for a 60 s URL.
    old = UrlSigner(TEST_SIGNING_KEY, ttl_s=60).sign(key, now=time.time() - 7200)
    expired = f"{parts.scheme}://{parts.netloc}{parts.path}?expires={old['expires']}"
    response = httpx.get(f"{expired}&signature={old['signature']}", timeout=30)
    assert_error(response, 403, None, "permission_error")
    assert "expired" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/images/files/../../../../etc/passwd",
        "/v1/images/files/outputs/../../../etc/passwd",
        "/v1/images/files/%2e%2e/%2e%2e/etc/passwd",
        "/v1/images/files/outputs/%2e%2e%2fsecret.png",
        "/v1/images/public/..%2f..%2fetc%2fpasswd",
    ],
)
def test_path_traversal_is_refused(base_url: str, path: str) -> None:
    # http.client sends the path as-is: no client-side normalisation of "..".
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", path + "?expires=9999999999&signature=" + "0" * 64)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status in (403, 404), (response.status, body[:200])
    assert b"root:" not in body and b'"error"' in body
