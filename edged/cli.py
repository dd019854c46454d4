"""The `edged` command line: run, check-config, probe, models, bench.

Runs in the supervisor process (or a short-lived command). Exit codes: 0 ok, 1 failure at run
time, 2 a config or usage error (the unit's RestartPreventExitStatus=2 then fails it at once:
restarting cannot fix a typo).
"""

from __future__ import annotations

import argparse
import faulthandler
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from edged import __version__

DEFAULT_CONFIG = "/etc/edged/config.toml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    code: int = args.func(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description="Edge video analytics daemon.")
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="config file")
    run.add_argument(
        "--print", action="store_true", help="also write every published message to stdout"
    )
    run.set_defaults(func=_run)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    check.add_argument(
        "--state-dir",
        metavar="DIR",
        help="look for fetched models here, as the service would (its $STATE_DIRECTORY, "
        "/var/lib/edged); default: node.state_dir, else $STATE_DIRECTORY, "
        "$XDG_STATE_HOME/edged or ~/.local/state/edged",
    )
    check.set_defaults(func=_check_config)

    probe = sub.add_parser(
        "probe", help="list the backends this machine can run (cpu; ascend with its devices)"
    )
    probe.add_argument("--json", action="store_true", help="print the report as JSON")
    probe.set_defaults(func=_probe)

    from edged.modelstore.command import register as register_models

    register_models(sub)

    from edged.bench.command import register as register_bench

    register_bench(sub)
    return parser


def _check_config(args: argparse.Namespace) -> int:
    from edged.config import ConfigError, load_config
    from edged.config.auto import cores

    try:
        config = load_config(args.config, state_dir=args.state_dir)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s); the config was not accepted", file=sys.stderr)
        return 2
    print(
        f"{args.config}: ok ({len(config.workers)} workers, {len(config.streams)} streams)",
    )
    # What the "auto" defaults resolved to on this machine (edged.config.auto).
    print(f"on this machine ({cores()} cores):")
    for worker in config.workers:
        print(f"  worker {worker.name}: {worker.threads} inference thread(s)")
    for stream in config.streams:
        print(f"  stream {stream.name}: {stream.decoder_threads} decoder thread(s)")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from edged.probe import run

    return run(args.json)


def _run(args: argparse.Namespace) -> int:
    from edged.config import ConfigError, load_config
    from edged.logs import configure_logging
    from edged.systemd.notify import Notifier

    # Built first: it takes NOTIFY_SOCKET out of the environment before any worker is spawned.
    notifier = Notifier()
    # A watchdog SIGABRT (or any fatal signal) prints every thread's stack to the journal.
    faulthandler.enable()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        # Through the logger, not print(): under systemd each problem is a journal entry at
        # error priority with its key path (`journalctl -u edged -p warning` shows why the unit
        # failed); on a terminal the same lines go to stderr, readable.
        configure_logging("info", process="supervisor")
        log = structlog.get_logger("edged.cli")
        exc.log(log)
        log.error("config not accepted; edged does not start", problems=len(exc.problems))
        return 2
    configure_logging(config.node.log_level, process="supervisor")

    import uvloop

    from edged.supervisor.daemon import Supervisor
    from edged.supervisor.echo import stdout_echo

    supervisor = Supervisor(
        Path(args.config).resolve(),
        config,
        notifier=notifier,
        echo=stdout_echo if args.print else None,
    )
    code: int = uvloop.run(supervisor.run())
    # Every worker is gone: end multiprocessing's resource tracker now, so that it does not
    # outlive us and get SIGKILLed by systemd (KillMode=mixed) on every clean stop.
    from edged.supervisor.tracker import stop_resource_tracker

    stop_resource_tracker()
    return code
