"""URLs with credentials: one parser for the whole project, and the one way to show a URL to people.

Pure functions, used by both processes (config validation, sources in a worker, the MQTT settings in
the supervisor). No state, nothing that can crash a process: a string that does not parse as a URL
is returned with anything that looks like `user:password@` masked.

Every place that writes a source or broker URL into a log line, a status, a health payload, an
error message or an MQTT payload goes through `redact_url`; tests grep everything edged wrote for
the password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

MASK = "***"

# user:password@ inside any text (an FFmpeg message quoting the URL, an exception's text).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")


@dataclass(frozen=True)
class Credentials:
    """The user and password a URL carries (percent-decoded), either may be None."""

    username: str | None
    password: str | None


def split(url: str) -> SplitResult:
    """`urllib.parse.urlsplit`, the single parser edged uses for URLs."""
    return urlsplit(url)


def credentials(url: str) -> Credentials:
    """The credentials embedded in `url` (`scheme://user:password@host/...`)."""
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return Credentials(user, password)


def without_credentials(url: str) -> str:
    """`url` with its `user:password@` removed (for libraries that take credentials apart)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc=_hostport(parts)).geturl()


def redact_url(url: str) -> str:
    """`url` as it may be shown: `rtsp://user:***@host/path`; a URL without password unchanged."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return redact_text(url)
    if password is None:
        return redact_text(url)
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:{MASK}@{_hostport(parts)}").geturl()


def redact_text(text: str) -> str:
    """Mask every `scheme://user:password@` in free text (an exception, a library's log line)."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def _hostport(parts: SplitResult) -> str:
    # netloc without userinfo; keeps an IPv6 host's brackets and the port as written.
    return parts.netloc.rpartition("@")[2]
