"""FFmpeg's own messages, into the worker's structured log with the stream's name.

Runs in a worker process. PyAV swallows FFmpeg's log by default (nothing reaches stderr raw); with
`install()` warnings and errors are passed to Python. A source thread wraps its work in
`StreamLog`, which captures what FFmpeg says in that thread (opening, demuxing, decoding) and
writes it as JSON log lines carrying `stream=<name>`, each text through `redact_text` because
FFmpeg quotes URLs with their passwords. Messages from FFmpeg's own threads (frame-threaded
decoding) belong to no source thread: they reach the stdlib logger "libav", which edged's logging
is given a handler here that redacts them and writes them the same way.
"""

from __future__ import annotations

import logging
import threading

import av.logging
import structlog

from edged.urls import redact_text

log = structlog.get_logger("edged.ffmpeg")

_installed = threading.Lock()


class _ToStructlog(logging.Handler):
    """FFmpeg messages from threads without a `StreamLog` (FFmpeg's own decoder threads)."""

    def emit(self, record: logging.LogRecord) -> None:
        text = redact_text(record.getMessage())
        component = record.name.removeprefix("libav").lstrip(".")
        if record.levelno >= logging.ERROR:
            log.error("ffmpeg", component=component, message=text)
        else:
            log.warning("ffmpeg", component=component, message=text)


def install() -> None:
    """Pass FFmpeg warnings and errors to Python (once per process; any thread)."""
    with _installed:
        libav = logging.getLogger("libav")
        if any(isinstance(h, _ToStructlog) for h in libav.handlers):
            return
        # PyAV logs to the stdlib loggers "libav.<component>"; a handler on their parent gets
        # them all (they propagate to it), redacts and writes them like every other line.
        libav.addHandler(_ToStructlog())
        libav.propagate = False
        # PyAV's own repeat suppression is process-wide: it holds back a message and emits it
        # later into whichever thread logs next, so one stream's line could carry another's
        # name. StreamLog folds repeats per stream instead.
        av.logging.set_skip_repeated(False)
        av.logging.set_level(av.logging.WARNING)


class StreamLog:
    """Captures FFmpeg's messages in the calling thread; `flush()` logs them with the stream.

    A message repeated back to back (a corrupt stream can make the decoder say the same thing
    for every frame) is logged once, then once more with its count when something else is said.
    """

    def __init__(self, stream: str) -> None:
        install()
        self._stream = stream
        self._capture = av.logging.Capture(local=True)
        self._logs: list[tuple[int, str, str]] = []
        self._previous: tuple[int, str, str] | None = None
        self._repeats = 0
        # The last thing FFmpeg said in this thread (redacted): why an open or read failed in
        # FFmpeg's words, which its error codes often do not tell (a host name that does not
        # resolve is only "Input/output error").
        self.last = ""

    def __enter__(self) -> StreamLog:
        self._logs = self._capture.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        self._write_repeats()
        self._capture.__exit__(None, None, None)

    def forget(self) -> None:
        """Start a new attempt: `last` is about this attempt only."""
        self.flush()
        self.last = ""

    def flush(self) -> None:
        """Write what FFmpeg said since the last flush (cheap when it said nothing)."""
        logs = self._logs
        while logs:
            entry = logs.pop(0)
            if entry == self._previous:
                self._repeats += 1
                continue
            self._write_repeats()
            self._previous = entry
            level, component, message = entry
            self.last = redact_text(message.strip())
            self._write(level, component, self.last)

    def _write_repeats(self) -> None:
        if self._repeats and self._previous is not None:
            level, component, message = self._previous
            text = f"{redact_text(message.strip())} (repeated {self._repeats} more times)"
            self._write(level, component, text)
        self._repeats = 0

    def _write(self, level: int, component: str, text: str) -> None:
        if level <= av.logging.ERROR:
            log.error("ffmpeg", stream=self._stream, component=component, message=text)
        else:
            log.warning("ffmpeg", stream=self._stream, component=component, message=text)
