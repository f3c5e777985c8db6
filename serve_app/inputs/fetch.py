"""Fetch an init image from a client-supplied URL without becoming an SSRF proxy.

Rules, checked for the first URL and again for every redirect hop:
1. ``data:`` URLs are decoded in place (base64 png/jpeg/webp only); nothing is fetched.
2. Only ``http`` and ``https``; no credentials in the URL.
3. The host name is resolved once, and *every* address it resolves to must be public
   (not private, loopback, link-local, multicast, reserved, unspecified, or a
   shared/carrier-grade range), unless the host or the address is on the operator's
   ``images.fetch_allowlist``.
4. The connection goes to the checked address itself (the URL is rewritten to the
   IP; ``Host`` and TLS SNI/certificate checks keep the name), so a DNS answer that
   changes between the check and the connect (DNS rebinding) cannot redirect it.
5. Redirects are followed by hand, at most ``fetch_max_redirects``, each one checked.
6. The body is read in chunks and abandoned past ``fetch_max_bytes``; the whole fetch,
   redirects included, runs within ``fetch_timeout_s``; the response's content type
   must be an image type we decode, and the bytes must decode (``uploads.decode_image``).

Every refusal is a 400 naming the parameter; a refused address is never connected to.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import socket
from urllib.parse import unquote_to_bytes, urljoin, urlsplit, urlunsplit

import httpx

from common.config import ImageInputConfig
from common.errors import APIError, invalid
from serve_app.inputs.uploads import MIME_TYPES, InputImage, decode_image

logger = logging.getLogger("imagegen.fetch")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
REDIRECTS = {301, 302, 303, 307, 308}
# Carrier-grade NAT space: not "private" to the ipaddress module, but not public either.
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class FetchRefused(APIError):
    """A URL refused before anything was sent (scheme, address, allowlist)."""


def refused(message: str, param: str, code: str) -> FetchRefused:
    return FetchRefused("invalid_request", message, param=param, code=code)


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED)
        or not address.is_global
    )


class Allowlist:
    """Operator exceptions: exact host names and IP networks."""

    def __init__(self, entries: list[str]) -> None:
        self.hosts = {e.lower() for e in entries if "/" not in e and not _is_ip(e)}
        self.networks = [
            ipaddress.ip_network(e if "/" in e else f"{e}/{32 if ':' not in e else 128}", False)
            for e in entries
            if "/" in e or _is_ip(e)
        ]

    def allows(self, host: str, address: IPAddress) -> bool:
        return host.lower() in self.hosts or any(address in net for net in self.networks)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def decode_data_url(url: str, param: str, limit: int) -> bytes:
    """``data:image/png;base64,...`` -> bytes (base64 image types only)."""
    header, sep, payload = url.partition(",")
    if not sep:
        raise invalid(f"'{param}' is not a valid data: URL (no comma).", param, "invalid_url")
    parts = header[len("data:") :].split(";")
    mime = parts[0].strip().lower() or "text/plain"
    if mime not in MIME_TYPES:
        raise invalid(
            f"'{param}' data: URL has media type '{mime}'; send image/png, image/jpeg or "
            "image/webp.",
            param,
            "unsupported_image_format",
        )
    if "base64" not in [p.strip().lower() for p in parts[1:]]:
        raise invalid(f"'{param}' data: URL must be base64-encoded.", param, "invalid_url")
    if len(payload) * 3 // 4 > limit:
        raise too_large(param, limit)
    try:
        return base64.b64decode(unquote_to_bytes(payload), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"'{param}' data: URL is not valid base64.", param, "invalid_image") from None


def too_large(param: str, limit: int) -> APIError:
    message = f"The image at '{param}' is larger than {limit} bytes."
    return invalid(message, param, "image_too_large")


class ImageFetcher:
    """Fetches image bytes for a URL parameter, following the rules above."""

    def __init__(self, config: ImageInputConfig, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.allowlist = Allowlist(config.fetch_allowlist)
        self._transport = transport

    async def fetch(self, url: str, param: str, max_bytes: int | None = None) -> bytes:
        """An image's bytes; with ``max_bytes``, any file's (a LoRA adapter: no data: URL,
        any content type, its own cap), under the same address and redirect rules."""
        if url[:5].lower() == "data:" and max_bytes is None:
            return decode_data_url(url, param, self.config.fetch_max_bytes)
        try:
            async with asyncio.timeout(self.config.fetch_timeout_s):
                return await self._fetch(url, param, max_bytes)
        except TimeoutError:
            raise invalid(
                f"Fetching '{param}' took longer than {self.config.fetch_timeout_s} s.",
                param,
                "fetch_timeout",
            ) from None

    async def _fetch(self, url: str, param: str, max_bytes: int | None = None) -> bytes:
        async with httpx.AsyncClient(
            transport=self._transport, follow_redirects=False, trust_env=False
        ) as client:
            for _hop in range(self.config.fetch_max_redirects + 1):
                target, host, address = await self.check(url, param)
                accept = {"accept": "image/png, image/jpeg, image/webp"}
                request = pinned_request(client, target, host, address, headers=accept)
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise invalid(
                        f"Could not fetch '{param}': {type(exc).__name__}.", param, "fetch_failed"
                    ) from None
                try:
                    if response.status_code in REDIRECTS and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return await self._read(response, param, max_bytes)
                finally:
                    await response.aclose()
        raise invalid(
            f"'{param}' redirected more than {self.config.fetch_max_redirects} times.",
            param,
            "too_many_redirects",
        )

    async def check(self, url: str, param: str) -> tuple[httpx.URL, str, IPAddress]:
        """Validate one URL and resolve its host; returns (url, host, the address to use)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise refused(
                f"'{param}' must be an http(s) or data: URL; '{scheme or url[:16]}' is not "
                "allowed.",
                param,
                "unsupported_url_scheme",
            )
        if parts.username or parts.password:
            raise refused(f"'{param}' must not carry credentials.", param, "invalid_url")
        host = parts.hostname
        if not host:
            raise refused(f"'{param}' has no host.", param, "invalid_url")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise refused(f"'{param}' has an invalid port.", param, "invalid_url") from None
        addresses = await _resolve(host, port)
        if not addresses:
            raise invalid(f"The host of '{param}' does not resolve.", param, "fetch_failed")
        blocked = [a for a in addresses if not is_public(a) and not self.allowlist.allows(host, a)]
        if blocked:
            logger.info("refused %s: %s resolves to %s", param, host, blocked)
            raise refused(
                f"'{param}' points to a private, loopback or link-local address; this server "
                "fetches public addresses only.",
                param,
                "blocked_address",
            )
        return httpx.URL(urlunsplit(parts)), host, addresses[0]

    async def _read(
        self, response: httpx.Response, param: str, max_bytes: int | None = None
    ) -> bytes:
        if response.status_code != 200:
            raise invalid(
                f"Fetching '{param}' returned HTTP {response.status_code}.", param, "fetch_failed"
            )
        mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if max_bytes is None and mime not in MIME_TYPES:
            raise invalid(
                f"'{param}' answered with content type '{mime or 'none'}'; expected image/png, "
                "image/jpeg or image/webp.",
                param,
                "unsupported_image_format",
            )
        limit = self.config.fetch_max_bytes if max_bytes is None else max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large(param, limit)
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > limit:
                raise too_large(param, limit)
            chunks.append(chunk)
        return b"".join(chunks)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    if _is_ip(host):
        return [ipaddress.ip_address(host)]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    seen: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in seen:
            seen.append(address)
    return seen


def pinned_request(
    client: httpx.AsyncClient,
    url: httpx.URL,
    host: str,
    address: IPAddress,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Request:
    """A request to ``address`` itself; ``Host`` and TLS SNI/verification keep ``host``.
    Webhook delivery (``serve_app/jobs/webhooks.py``) sends its POSTs through it too."""
    ip_host = f"[{address}]" if address.version == 6 else str(address)
    port = url.port
    host_header = host if port is None else f"{host}:{port}"
    pinned = url.copy_with(host=ip_host.strip("[]"))
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return client.build_request(
        method,
        pinned,
        headers={"host": host_header, **(headers or {})},
        content=content,
        extensions=extensions,
    )


async def load_url_image(
    fetcher: ImageFetcher, url: str, param: str, limits: ImageInputConfig
) -> InputImage:
    """Fetch (or decode a data: URL) and decode the image, off the event loop."""
    data = await fetcher.fetch(url, param)
    return await asyncio.to_thread(decode_image, data, param, limits)
