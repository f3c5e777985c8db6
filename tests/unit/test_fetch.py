"""Safe image_url fetching against real local HTTP servers: SSRF refusals, limits, data URLs.

The server that may be reached listens on 127.0.0.2, which the allowlist names; a
second server on 127.0.0.1 stands for an internal service and must never be hit.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterator

import pytest

from common.config import ImageInputConfig
from common.errors import APIError
from serve_app.inputs.fetch import ImageFetcher, is_public
from tests.support.image_server import ImageServer, image_server, png_bytes

ALLOWED_HOST = "127.0.0.2"


@pytest.fixture(scope="module")
def allowed() -> Iterator[ImageServer]:
    with image_server(ALLOWED_HOST, delay_s=2.0) as server:
        yield server


@pytest.fixture(scope="module")
def internal() -> Iterator[ImageServer]:
    with image_server("127.0.0.1") as server:
        yield server


def fetcher(**overrides: object) -> ImageFetcher:
    config = {"fetch_allowlist": [ALLOWED_HOST], "fetch_timeout_s": 1.0, **overrides}
    return ImageFetcher(ImageInputConfig.model_validate(config))


async def refused(url: str, code: str, **overrides: object) -> APIError:
    with pytest.raises(APIError) as info:
        await fetcher(**overrides).fetch(url, "image_url")
    assert info.value.status == 400 and info.value.param == "image_url", info.value.message
    assert info.value.code == code, info.value.message
    return info.value


@pytest.mark.parametrize(
    "address,public",
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
    ],
)
def test_public_address_table(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


async def test_fetches_from_an_allowlisted_server(allowed: ImageServer) -> None:
    data = await fetcher().fetch(allowed.url("/img.png"), "image_url")
    assert data == allowed.image


async def test_follows_a_checked_redirect(allowed: ImageServer) -> None:
    target = allowed.url("/img.png")
    data = await fetcher().fetch(allowed.url(f"/redirect?to={target}"), "image_url")
    assert data == allowed.image


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/img.png",
        "http://localhost:{port}/img.png",
        "http://[::ffff:127.0.0.1]:{port}/img.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/img.png",
    ],
)
async def test_private_addresses_are_refused_before_connecting(
    internal: ImageServer, url: str
) -> None:
    await refused(url.format(port=internal.port), "blocked_address")
    assert internal.hits == []


async def test_redirect_to_a_private_address_is_refused(
    allowed: ImageServer, internal: ImageServer
) -> None:
    private = internal.url("/img.png")
    await refused(allowed.url(f"/redirect?to={private}"), "blocked_address")
    assert internal.hits == []
    metadata = "http://169.254.169.254/latest/meta-data/"
    await refused(allowed.url(f"/redirect?to={metadata}"), "blocked_address")


@pytest.mark.parametrize(
    "url,code",
    [
        ("file:///etc/passwd", "unsupported_url_scheme"),
        ("ftp://example.com/a.png", "unsupported_url_scheme"),
        ("gopher://127.0.0.1:70/", "unsupported_url_scheme"),
        ("http://user:pw@example.com/a.png", "invalid_url"),
        ("http:///a.png", "invalid_url"),
    ],
)
async def test_other_urls_are_refused(url: str, code: str) -> None:
    await refused(url, code)


async def test_redirect_to_file_scheme_is_refused(allowed: ImageServer) -> None:
    await refused(allowed.url("/redirect?to=file:///etc/passwd"), "unsupported_url_scheme")


async def test_too_many_redirects(allowed: ImageServer) -> None:
    url = allowed.url("/img.png")
    for _ in range(3):
        url = allowed.url(f"/redirect?to={url}")
    await refused(url, "too_many_redirects", fetch_max_redirects=2)


async def test_content_type_status_size_and_timeout(allowed: ImageServer) -> None:
    await refused(allowed.url("/text"), "unsupported_image_format")
    await refused(allowed.url("/missing.png"), "fetch_failed")
    await refused(allowed.url("/big.png"), "image_too_large", fetch_max_bytes=1 << 20)
    await refused(allowed.url("/slow.png"), "fetch_timeout", fetch_timeout_s=0.3)


async def test_allowlist_by_network() -> None:
    with image_server("127.0.0.3") as server:
        data = await fetcher(fetch_allowlist=["127.0.0.0/29"]).fetch(server.url("/img.png"), "u")
        assert data == server.image


async def test_data_urls() -> None:
    png = png_bytes(8, 8)
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    assert await fetcher().fetch(url, "image_url") == png
    await refused("data:text/plain;base64,aGk=", "unsupported_image_format")
    await refused("data:image/png,rawbytes", "invalid_url")
    await refused("data:image/png;base64,@@@", "invalid_image")
    big = "data:image/png;base64," + "A" * (2 << 20)
    await refused(big, "image_too_large", fetch_max_bytes=1 << 20)
