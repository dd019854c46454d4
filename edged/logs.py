"""Logging setup for every edged process: structlog, one of three output modes.

Each process calls `configure_logging` once, first thing: the supervisor in `main()`, each worker
at the top of its spawn entry point (spawned children start with a fresh interpreter and inherit
nothing but the environment and the stderr file descriptor). The mode is chosen from stderr:

* a terminal          -> readable, coloured console lines;
* the journal stream  -> journald's native protocol, one entry per event with EDGED_* fields
                         (`journalctl -u edged EDGED_STREAM=cam1`), see `edged.systemd.journal`;
* anything else       -> one JSON object per line (pipes, files, containers, log shippers).

`$EDGED_LOG_FORMAT=console|json|journal` overrides the choice (debugging, tests).

Log calls on a filtered level format nothing: the bound logger class comes from
`structlog.make_filtering_bound_logger`. Loggers are not cached on first use, so a reload that
changes `node.log_level` reaches every logger, module-level or bound, at once (a call costs a
lookup of the current configuration, a few microseconds; nothing logs per frame or per result).
Library code that logs through the standard `logging` module (asyncio's "Task exception was never
retrieved", paho) is routed into the same chain, so nothing leaves the process in a
different shape.
If a renderer fails, structlog's exception propagates to the caller of the log method; the
renderers here do not raise for I/O problems (the journal sender falls back to stderr).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import FilteringBoundLogger, Processor

from edged.systemd.journal import JournalRenderer, JournalSender, stderr_is_journal

LogMode = Literal["console", "json", "journal"]
LOG_FORMAT_ENV = "EDGED_LOG_FORMAT"
LEVELS = ("debug", "info", "warning", "error", "critical")

# Callsite lookup must skip our own bridge and the stdlib logging machinery, so that a record
# coming through `logging` points at the library line that logged it.
_CALLSITE_IGNORES = ["edged.logs", "logging"]


def log_mode(stream: TextIO | None = None) -> LogMode:
    """Which output mode this process uses (see the module docstring for the rule)."""
    forced = os.environ.get(LOG_FORMAT_ENV, "").strip().lower()
    if forced in ("console", "json", "journal"):
        return forced  # type: ignore[return-value]
    out = sys.stderr if stream is None else stream
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return "json"
    if out.isatty():
        return "console"
    if stderr_is_journal(fd=fd):
        return "journal"
    return "json"


def get_logger(name: str, **initial: Any) -> FilteringBoundLogger:
    """A logger whose events carry `logger=<name>` (use `__name__`).

    Safe at import time: the logger is resolved on first use, after `configure_logging`.
    """
    logger: FilteringBoundLogger = structlog.get_logger(name, **initial)
    return logger


class _NamedWriteLogger(structlog.WriteLogger):
    """A WriteLogger that remembers the name it was created for (read by `_add_logger_name`)."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedWriteLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self.file = file

    def __call__(self, *args: Any) -> _NamedWriteLogger:
        return _NamedWriteLogger(self.file, str(args[0]) if args else "edged")


def _add_logger_name(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.setdefault("logger", getattr(logger, "name", "edged"))
    return event_dict


class _StaticFields:
    """Adds the process name and pid, fixed when logging is configured in that process."""

    def __init__(self, process: str) -> None:
        self.process = process
        self.pid = os.getpid()

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("process", self.process)
        event_dict.setdefault("pid", self.pid)
        return event_dict


class _StdlibBridge(logging.Handler):
    """Forwards records of the standard `logging` module into the structlog chain."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = structlog.get_logger(record.name)
            kwargs: dict[str, Any] = {}
            if record.exc_info:
                kwargs["exc_info"] = record.exc_info
            log.log(record.levelno, record.getMessage(), **kwargs)
        except Exception:
            self.handleError(record)


def _json_dumps(obj: Any, **kwargs: Any) -> str:
    # Values JSON cannot hold (paths, enums) are logged as their text, not their repr.
    kwargs["default"] = str
    return json.dumps(obj, ensure_ascii=False, **kwargs)


def _processors(mode: LogMode, process: str) -> list[Processor]:
    chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
        _StaticFields(process),
    ]
    if mode == "journal":
        # journald stamps entries itself; CODE_FILE/LINE/FUNC come from the call site.
        chain += [
            structlog.processors.CallsiteParameterAdder(
                [
                    structlog.processors.CallsiteParameter.PATHNAME,
                    structlog.processors.CallsiteParameter.LINENO,
                    structlog.processors.CallsiteParameter.FUNC_NAME,
                ],
                additional_ignores=_CALLSITE_IGNORES,
            ),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            JournalRenderer(JournalSender()),
        ]
    elif mode == "console":
        chain += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.dev.ConsoleRenderer(colors="NO_COLOR" not in os.environ),
        ]
    else:
        chain += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json_dumps),
        ]
    return chain


def configure_logging(level: str, *, process: str) -> None:
    """Set up structlog (and route stdlib `logging`) for this process.

    `level`: debug, info, warning, error or critical (case-insensitive).
    `process`: a short name for this process in every event, e.g. "supervisor", "worker:cpu0".
    Calling it again (e.g. after a reload changed `log_level`) replaces the configuration for
    every logger of the process, including those created before: they are lazy proxies that are
    never cached, and objects that bind context keep a proxy (`get_logger(name, key=value)`),
    never a logger resolved under the old configuration.
    """
    name = level.strip().lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    numeric = logging.getLevelNamesMapping()[name.upper()]
    mode = log_mode()
    structlog.configure(
        processors=_processors(mode, process),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_NamedWriteLoggerFactory(sys.stderr),
        # Not cached, so a changed level reaches loggers created before (see the docstring).
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibBridge):
            root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    root.setLevel(numeric)
