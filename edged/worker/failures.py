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


def _words(exc: BaseException, ffmpeg_said: str) -> str:
    """The error in words: FFmpeg's error text and what FFmpeg logged for this stream.

    Not str() of a PyAV error: it quotes the URL and appends FFmpeg's last error log line, which
    is process-wide and may belong to another stream.
    """
    if isinstance(exc, av.error.FFmpegError):
        words = exc.strerror or type(exc).__name__
    else:
        words = redact_text(str(exc)) or type(exc).__name__
    return f"{words}; FFmpeg: {ffmpeg_said}" if ffmpeg_said else words


# What FFmpeg logs when its error code says no more than "Input/output error".
_SAID = (
    ("resolve hostname", StreamReason.UNREACHABLE),
    ("network is unreachable", StreamReason.UNREACHABLE),
    ("no route to host", StreamReason.UNREACHABLE),
    ("connection refused", StreamReason.CONNECTION_REFUSED),
    ("401 unauthorized", StreamReason.UNAUTHORIZED),
    ("404 not found", StreamReason.NOT_FOUND),
)


def opening(
    exc: BaseException, elapsed: float, timeout: float, ffmpeg_said: str = ""
) -> SourceFailure:
    """What an exception from opening a source (connect, handshake, stream description) means;
    `ffmpeg_said`: the last message FFmpeg logged for this stream during the attempt."""
    reason = _classify(exc, ffmpeg_said)
    timed_out = elapsed >= timeout * TIMEOUT_SLACK
    if timed_out and reason in (StreamReason.INVALID_DATA, StreamReason.ERROR):
        return SourceFailure(
            StreamReason.NO_ANSWER, f"no answer within open_timeout ({timeout:g} s)"
        )
    if reason is StreamReason.STALLED:
        reason = StreamReason.NO_ANSWER
    return SourceFailure(reason, _detail(reason, exc, ffmpeg_said))


def reading(
    exc: BaseException, elapsed: float, timeout: float, ffmpeg_said: str = ""
) -> SourceFailure:
    """What an exception from reading an opened source means."""
    reason = _classify(exc, ffmpeg_said)
    if elapsed >= timeout * TIMEOUT_SLACK and reason in (
        StreamReason.INVALID_DATA,
        StreamReason.ERROR,
        StreamReason.NO_ANSWER,
    ):
        reason = StreamReason.STALLED
    if reason is StreamReason.STALLED:
        return SourceFailure(reason, f"no data for {elapsed:.1f} s")
    return SourceFailure(reason, _detail(reason, exc, ffmpeg_said))


_WORDS = {
    StreamReason.UNAUTHORIZED: "the source wants a user and password, or refused the ones given",
    StreamReason.FORBIDDEN: "the source refused access",
    StreamReason.NOT_FOUND: "no such stream, path or file",
    StreamReason.CONNECTION_REFUSED: "connection refused: nothing listens on that host and port",
    StreamReason.SERVER_ERROR: "the server failed",
    StreamReason.UNREACHABLE: "host unknown or not reachable",
    StreamReason.DISCONNECTED: "the source closed the connection",
    StreamReason.INVALID_DATA: "not a stream or file that can be read",
}


def _detail(reason: StreamReason, exc: BaseException, ffmpeg_said: str) -> str:
    words = _WORDS.get(reason)
    said = _words(exc, ffmpeg_said)
    return f"{words} ({said})" if words else said


def _classify(exc: BaseException, ffmpeg_said: str) -> StreamReason:
    reason = _classify_error(exc)
    if reason in (StreamReason.ERROR, StreamReason.INVALID_DATA):
        said = ffmpeg_said.lower()
        for words, meant in _SAID:
            if words in said:
                return meant
    return reason


def _classify_error(exc: BaseException) -> StreamReason:
    if isinstance(exc, av.error.HTTPUnauthorizedError):
        return StreamReason.UNAUTHORIZED
    if isinstance(exc, av.error.HTTPForbiddenError | PermissionError):
        return StreamReason.FORBIDDEN
    if isinstance(exc, av.error.HTTPNotFoundError | FileNotFoundError):
        return StreamReason.NOT_FOUND
    if isinstance(exc, av.error.HTTPServerError):
        return StreamReason.SERVER_ERROR
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
