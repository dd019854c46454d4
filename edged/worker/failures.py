"""Why a source failed, as a `StreamReason` and words a person can act on. Runs in a worker.

PyAV raises FFmpeg's error codes as typed exceptions (HTTP 401/403/404 from RTSP and HTTP
servers, the socket's errno); these are mapped to reasons here, in one place. FFmpeg gives no
distinct code when a server accepts the connection and never answers (its interrupt callback
ends the wait and the demuxer reports whatever it had: often "invalid data"), so the time the
attempt took decides between "no answer" and the error it reports. Every text that leaves this
module went through `redact_text`: FFmpeg quotes the URL, password included, in its errors.
"""

from __future__ import annotations

import errno

import av

from edged.protocol import StreamReason
from edged.urls import redact_text

# An interrupted wait ends a little before or after the configured timeout.
TIMEOUT_SLACK = 0.9


class SourceFailure(Exception):
    """A source cannot be played now; `reason` and `detail` go to the status and the log."""

    def __init__(self, reason: StreamReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        # Whether the stream had delivered frames before it failed (its backoff starts afresh).
        self.played = False


def _words(exc: BaseException) -> str:
    return redact_text(str(exc)) or type(exc).__name__


def opening(exc: BaseException, elapsed: float, timeout: float) -> SourceFailure:
    """What an exception from opening a source (connect, handshake, stream description) means."""
    reason = _classify(exc)
    timed_out = elapsed >= timeout * TIMEOUT_SLACK
    if timed_out and reason in (StreamReason.INVALID_DATA, StreamReason.ERROR):
        return SourceFailure(
            StreamReason.NO_ANSWER, f"no answer within open_timeout ({timeout:g} s)"
        )
    if reason is StreamReason.STALLED:
        reason = StreamReason.NO_ANSWER
    return SourceFailure(reason, _detail(reason, exc))


def reading(exc: BaseException, elapsed: float, timeout: float) -> SourceFailure:
    """What an exception from reading an opened source means."""
    reason = _classify(exc)
    if elapsed >= timeout * TIMEOUT_SLACK and reason in (
        StreamReason.INVALID_DATA,
        StreamReason.ERROR,
        StreamReason.NO_ANSWER,
    ):
        reason = StreamReason.STALLED
    if reason is StreamReason.STALLED:
        return SourceFailure(reason, f"no data for {elapsed:.1f} s")
    return SourceFailure(reason, _detail(reason, exc))


_WORDS = {
    StreamReason.UNAUTHORIZED: "the source wants a user and password, or refused the ones given",
    StreamReason.FORBIDDEN: "the source refused access",
    StreamReason.NOT_FOUND: "no such stream, path or file",
    StreamReason.CONNECTION_REFUSED: "connection refused: nothing listens on that host and port",
    StreamReason.UNREACHABLE: "host not reachable",
    StreamReason.DISCONNECTED: "the source closed the connection",
    StreamReason.INVALID_DATA: "not a stream or file that can be read",
}


def _detail(reason: StreamReason, exc: BaseException) -> str:
    words = _WORDS.get(reason)
    return f"{words} ({_words(exc)})" if words else _words(exc)


def _classify(exc: BaseException) -> StreamReason:
    if isinstance(exc, av.error.HTTPUnauthorizedError):
        return StreamReason.UNAUTHORIZED
    if isinstance(exc, av.error.HTTPForbiddenError | PermissionError):
        return StreamReason.FORBIDDEN
    if isinstance(exc, av.error.HTTPNotFoundError | FileNotFoundError):
        return StreamReason.NOT_FOUND
    if isinstance(exc, ConnectionRefusedError):
        return StreamReason.CONNECTION_REFUSED
    if isinstance(exc, ConnectionError | EOFError):  # reset, aborted, broken pipe, end of file
        return StreamReason.DISCONNECTED
    if isinstance(exc, TimeoutError | av.error.ExitError):
        return StreamReason.STALLED
    if isinstance(exc, av.error.InvalidDataError):
        return StreamReason.INVALID_DATA
    if isinstance(exc, OSError) and exc.errno in (
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EADDRNOTAVAIL,
    ):
        return StreamReason.UNREACHABLE
    return StreamReason.ERROR
