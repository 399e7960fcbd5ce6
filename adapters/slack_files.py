"""Files shared with a Slack message, downloaded as Slack asks: the file's private URL with the
bot token as a Bearer header (slack_sdk has no call for it). The token goes only to Slack's file
host or the configured API host, never to an address an event merely names; and a sign-in page
where the file should be (an app without the ``files:read`` scope) is an error, not the file.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot.core.attachments import Offered
from bot.errors import PlatformError

__all__ = ["offered"]

FILE_HOST = "files.slack.com"
TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)


def offered(files: list[Any], token: str, api_base: str, max_bytes: int) -> list[Offered]:
    """The message's ``files`` (its event's list), each with how to download it."""
    hosts = {FILE_HOST, urlsplit(api_base).hostname or FILE_HOST}
    found = []
    for file in files:
        if not isinstance(file, dict):
            continue
        name = str(file.get("name") or file.get("title") or "file")
        size = int(file.get("size") or 0)
        fetch = functools.partial(_download, file, token, hosts, max_bytes)
        found.append(Offered(name, size, fetch))
    return found


async def _download(file: dict[str, Any], token: str, hosts: set[str], max_bytes: int) -> bytes:
    url = str(file.get("url_private_download") or file.get("url_private") or "")
    if urlsplit(url).hostname not in hosts:
        raise PlatformError(f"not a Slack file address: {urlsplit(url).hostname or url[:40]!r}")
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(url, headers=headers) as response,
    ):
        response.raise_for_status()
        if response.content_type == "text/html" and file.get("mimetype") != "text/html":
            raise PlatformError("Slack sent a sign-in page: does the app have files:read?")
        data = bytearray()
        async for chunk in response.content.iter_chunked(65536):
            data += chunk
            if len(data) > max_bytes:
                break  # too large: the caller says so without reading the rest
        return bytes(data)
