"""HTTP plumbing shared by the Prometheus source and the HTTP drainer.

Credentials never reach a log line: a URL's userinfo is split off into an
`Authorization: Basic` header before the request is made, so neither our messages nor aiohttp's
exception texts can carry it. Retries cover what a retry can fix (5xx, connection
errors, timeouts) and nothing else.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from yarl import URL

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class FetchError(Exception):
    """A request failed for good; the message is safe to log (no credentials)."""


@dataclass(frozen=True, slots=True)
class Response:
    """What came back, read in full."""

    status: int  # HTTP status code
    content_type: str  # media type without parameters, e.g. "application/json"
    body: bytes  # whole body


def split_credentials(url: str) -> tuple[URL, dict[str, str]]:
    """`url` without its userinfo, and that userinfo as an `Authorization` header
    (no header when the URL has none).

    Raises `FetchError` for a URL that is not absolute http(s); the message names the
    URL without its userinfo.
    """
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise FetchError(f"invalid URL: {type(exc).__name__}") from None
    headers: dict[str, str] = {}
    if parsed.user is not None:
        # Built by hand: aiohttp's BasicAuth is deprecated and its replacement is recent.
        token = f"{parsed.user}:{parsed.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
    bare = parsed.with_user(None)
    if bare.scheme not in ("http", "https") or not bare.host:
        raise FetchError(f"not an absolute http(s) URL: {bare}")
    return bare, headers


def safe_url(url: str) -> str:
    """`url` for a log line: userinfo removed (best effort on unparsable text)."""
    try:
        return str(URL(url).with_user(None))
    except (ValueError, TypeError):
        return "<unparsable url>"


def describe(exc: BaseException, timeout_s: float) -> str:
    """A short reason for a failed request."""
    if isinstance(exc, TimeoutError):
        return f"timeout after {timeout_s:g} s"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def fetch(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    *,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
    timeout_s: float,
    retries: int,
    backoff_s: float,
    sleep: Sleep,
    what: str,
) -> Response:
    """Make one request, retried `retries` times with doubling backoff on 5xx, connection
    errors and timeouts.

    Returns the last response (which may still be a 5xx once retries are spent, or any
    4xx at once); raises `FetchError` when no response came at all. `what` tags log lines.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    for attempt in range(retries + 1):
        try:
            async with session.request(
                method, url, params=params, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                body = await resp.read()
                response = Response(resp.status, resp.content_type, body)
        except aiohttp.InvalidURL as exc:
            raise FetchError(describe(exc, timeout_s)) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = describe(exc, timeout_s)
            if attempt == retries:
                raise FetchError(reason) from None
        else:
            if response.status < 500 or attempt == retries:
                return response
            reason = f"HTTP {response.status}"
        delay_s = backoff_s * 2**attempt
        log.info(
            "http_retry what=%s url=%s attempt=%d delay_s=%.3f reason=%s",
            what,
            url,
            attempt + 1,
            delay_s,
            reason,
        )
        await sleep(delay_s)
    raise AssertionError("unreachable")
