"""The supervisor: `edged run`. One asyncio process, under systemd, that never touches a frame.

It owns the worker handles, the MQTT publisher and the health reporter, and handles signals by
name on its own loop: SIGTERM/SIGINT stop everything in order and exit 0 (a second one kills
what is left at once), SIGHUP reloads the config. If the supervisor itself dies, each worker sees
EOF on its pipe and exits; systemd's KillMode=mixed cleans up anything left.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from edged.config import Config, ConfigError, StreamConfig, WorkerConfig, load_config
from edged.config.diff import ConfigDiff, diff_configs
from edged.config.labels import load_labels
from edged.logs import configure_logging
from edged.mqtt.publisher import Publisher
from edged.protocol import (
    Counts,
    Crossing,
    Metrics,
    ObjectEvent,
    Result,
    StreamReason,
    StreamState,
    StreamStatus,
    Up,
    WorkerState,
)
from edged.supervisor.events import EventRelay
from edged.supervisor.handle import Host, WorkerEvents, WorkerHandle
from edged.supervisor.health import HealthTracker
from edged.supervisor.ledger import Ledger
from edged.supervisor.restart import RestartPolicy
from edged.supervisor.snapshots import SnapshotStore
from edged.supervisor.switches import DetectionSwitches
from edged.systemd.notify import Notifier
from edged.systemd.watchdog import extending_timeout, ping_watchdog, watchdog_blocker

log = structlog.get_logger(__name__)

STOP_GRACE_S = 5.0
# READY=1 waits this long for the broker; after that edged runs and keeps events in the outbox.
MQTT_READY_GRACE_S = 10.0
WATCH_INTERVAL_S = 2.0


class Supervisor:
    def __init__(
        self,
        config_path: Path,
        config: Config,
        *,
        notifier: Notifier,
        echo: Callable[[str, bytes], None] | None = None,
        policy: RestartPolicy | None = None,
        host: Host | None = None,
    ) -> None:
        """`policy` and `host` replace the workers' restart policy and their processes and
        clock (tests: fake workers on virtual time); production passes neither."""
        self.config_path = config_path
        self.config = config
        self.generation = 1
        self.config_hash = _file_hash(config_path)
        self._notifier = notifier
        self._policy = policy
        self._host = host
        self._detection = DetectionSwitches(Path(config.node.state_dir))
        self._publisher = Publisher(
            config.mqtt,
            config.node,
            config.homeassistant,
            Path(config.node.state_dir),
            echo=echo,
            on_detection=self._on_detection_command,
        )
        state_dir = Path(config.node.state_dir)
        self._ledger = Ledger(state_dir)
        self._snapshots = SnapshotStore(state_dir)
        self._events = EventRelay(self._publisher, self._ledger, self._snapshots)
        self._health = HealthTracker()
        self._handles: dict[str, WorkerHandle] = {}
        self._signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._reload_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._switch_saves: set[asyncio.Task[None]] = set()
        self._status = ""
        # Set when the stop begins: from then on STATUS= says what the stop is doing, and no
        # worker count (which changes as workers stop) may overwrite it.
        self._stopping = False

    # --- the main task ------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._signals.put_nowait, sig)
        log.info("edged starting", config=str(self.config_path), generation=self.generation)
        self._spawn_task(self._publisher.run(), "mqtt")
        self._publish_config_state(ok=True, errors=[])
        self._publisher.set_streams(self.config.streams, self._labels_of(self.config))
        self._events.set_streams(self.config.streams)
        self._events.end_left_open()
        for worker in self.config.workers:
            self._add_worker(worker)
        self._publish_switches()
        self._spawn_task(self._announce_ready(), "startup")
        self._spawn_task(self._health_loop(), "health")
        self._spawn_task(self._reload_loop(), "reload")
        self._spawn_task(self._watch_config(), "watch-config")
        if self._notifier.watchdog_interval:
            self._spawn_task(self._watchdog(), "watchdog")
        while True:
            sig = await self._signals.get()
            if sig is signal.SIGHUP:
                self._reload_wanted.set()
                continue
            log.info("stopping", signal=sig.name)
            break
        await self._shutdown()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        return 0

    def _spawn_task(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _shutdown(self) -> None:
        self._stopping = True
        self._notifier.stopping("stopping: workers, then mqtt")
        for task in self._tasks:
            if task.get_name() != "mqtt":
                task.cancel()
        # A second SIGTERM/SIGINT while stopping: kill the workers now rather than wait.
        hurry = asyncio.create_task(self._second_signal(), name="second-signal")
        await asyncio.gather(*(h.stop(STOP_GRACE_S) for h in self._handles.values()))
        hurry.cancel()
        for name in self._health.streams:
            self._publish_stream_status(
                name, StreamStatus.OFFLINE, StreamReason.EDGED_STOPPED, "edged stopped"
            )
        self._health.rollover(self._handles)
        self._publisher.set_state(
            "health", self._health.snapshot(self._handles, self.generation, self._publisher.stats())
        )
        self._notifier.status("stopping: flushing mqtt")
        await self._ledger.close()
        self._snapshots.close()
        await self._publisher.stop(flush_timeout=2.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # systemd keeps the last STATUS= after the unit stops: make it the outcome.
        unsent = self._publisher.stats()["outbox_depth"]
        kept = (
            f"{unsent} messages kept in the outbox for the next start"
            if unsent
            else ("outbox empty")
        )
        self._notifier.status(f"stopped: workers stopped, {kept}")
        log.info("edged stopped", unsent=unsent)

    async def _second_signal(self) -> None:
        while True:
            sig = await self._signals.get()
            if sig is not signal.SIGHUP:
                log.warning("second signal while stopping; killing workers now", signal=sig.name)
                for handle in self._handles.values():
                    handle.kill_now()

    # --- workers and their messages -----------------------------------------------------------

    def _add_worker(self, worker: WorkerConfig) -> None:
        streams = self._detecting(worker.name)
        for stream in self.config.streams:
            if stream.worker == worker.name:
                self._health.track_stream(stream.name, worker.name)
                if not self._detection.enabled(stream.name):
                    self._detection_off(stream.name)
        handle = WorkerHandle(
            worker,
            streams,
            WorkerEvents(self._on_message, self._on_worker_state),
            log_level=self.config.node.log_level,
            policy=self._policy,
            host=self._host,
        )
        self._handles[worker.name] = handle
        handle.start()

    def _on_message(self, handle: WorkerHandle, message: Up) -> None:
        if isinstance(message, Result):
            stream = handle.streams.get(message.stream)
            if stream is not None:
                if stream.detections:
                    self._publisher.publish_detections(message.stream, message)
                self._health.on_result(message, time.time())
        elif isinstance(message, ObjectEvent):
            if message.stream in handle.streams:
                self._events.on_event(message)
        elif isinstance(message, Crossing):
            if message.stream in handle.streams:
                self._events.on_crossing(message)
        elif isinstance(message, Counts):
            if message.stream in handle.streams:
                self._events.on_counts(message)
        elif isinstance(message, Metrics):
            self._health.on_metrics(handle.config.name, message)
        elif (
            isinstance(message, StreamState)
            # a stream stopped (detection off, removed) may still report its last state
            and message.stream in handle.streams
            and self._health.on_stream_state(message)
        ):
            if message.status is not StreamStatus.ONLINE:
                self._events.stream_not_online(message.stream)
            self._publish_stream_status(
                message.stream, message.status, message.reason, message.detail
            )
            self._update_status()

    def _on_worker_state(self, handle: WorkerHandle) -> None:
        if handle.state not in (WorkerState.READY, WorkerState.STOPPING):
            # The process is gone and its pipe drained: what it left open ends here.
            reason = "shutdown" if self._stopping else "restart"
            self._events.worker_gone(self._streams_of(handle.config.name), reason)
        if handle.state is not WorkerState.READY:
            self._health.worker_gone(handle.config.name)
            for name, stream in self._health.streams.items():
                if stream.worker == handle.config.name:
                    if handle.state is WorkerState.FAILED:
                        self._publish_stream_status(
                            name,
                            StreamStatus.FAILED,
                            StreamReason.WORKER_FAILED,
                            f"worker {handle.config.name} failed: {handle.last_exit}",
                        )
                    else:
                        self._publish_stream_status(
                            name, stream.status, stream.reason, stream.detail
                        )
        self._state_changed.set()
        self._update_status()

    def _streams_of(self, worker: str) -> list[str]:
        return [s.name for s in self.config.streams if s.worker == worker]

    # --- the detection switch -----------------------------------------------------------------

    def _detecting(self, worker: str) -> dict[str, StreamConfig]:
        """The worker's streams that have detection on (the ones its process runs)."""
        return {
            s.name: s
            for s in self.config.streams
            if s.worker == worker and self._detection.enabled(s.name)
        }

    def _on_detection_command(self, stream: str, enabled: bool) -> None:
        """`<stream>/detection/set` from Home Assistant, Node-RED or a script: stop or start the
        stream on its worker now (the decoder and inference stop: no CPU spent), remember it in
        the state directory, then say so on the retained `<stream>/detection`."""
        config = next((s for s in self.config.streams if s.name == stream), None)
        if config is None:
            log.warning("detection command for an unknown stream", stream=stream)
            return
        if self._detection.switch(stream, enabled):
            handle = self._handles.get(config.worker)
            log.info("detection switched", stream=stream, enabled=enabled)
            if enabled:
                self._health.track_stream(stream, config.worker)
                stream_health = self._health.streams[stream]
                stream_health.status = StreamStatus.STARTING
                stream_health.reason, stream_health.detail = StreamReason.NONE, ""
                self._publish_stream_status(stream, StreamStatus.STARTING, StreamReason.NONE, "")
                if handle is not None:
                    handle.set_stream(config)
            else:
                if handle is not None:
                    handle.remove_stream(stream)
                self._detection_off(stream)
            self._update_status()
        # Not one of `_tasks` (the watchdog treats an ended one as a dead loop).
        task = asyncio.create_task(self._save_switch(stream), name=f"switch-{stream}")
        self._switch_saves.add(task)
        task.add_done_callback(self._switch_saves.discard)

    async def _save_switch(self, stream: str) -> None:
        await self._detection.save()
        self._publisher.set_detection(stream, self._detection.enabled(stream))

    def _detection_off(self, stream: str) -> None:
        health = self._health.streams.get(stream)
        detail = "detection is turned off (the stream's detection switch)"
        if health is not None:
            health.status, health.reason, health.detail = (
                StreamStatus.STOPPED, StreamReason.DETECTION_OFF, detail
            )
        self._publish_stream_status(
            stream, StreamStatus.STOPPED, StreamReason.DETECTION_OFF, detail
        )
        self._events.stream_not_online(stream)

    def _publish_switches(self) -> None:
        for stream in self.config.streams:
            self._publisher.set_detection(stream.name, self._detection.enabled(stream.name))

    def _publish_stream_status(
        self, stream: str, status: StreamStatus, reason: StreamReason, detail: str
    ) -> None:
        worker = self._health.streams[stream].worker if stream in self._health.streams else ""
        self._publisher.set_state(
            f"{stream}/status",
            {
                "stream": stream,
                "status": status.value,
                "reason": reason.value,
                "detail": detail,
                "worker": worker,
            },
        )

    # --- startup, watchdog, health ------------------------------------------------------------

    async def _announce_ready(self) -> None:
        settled = (WorkerState.READY, WorkerState.FAILED)
        # Model loads can outlast TimeoutStartSec; tell systemd we are still making progress.
        async with extending_timeout(self._notifier, 30.0):
            while not all(h.state in settled for h in self._handles.values()):
                self._state_changed.clear()
                await self._state_changed.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._publisher.wait_connected(), MQTT_READY_GRACE_S)
        self._ready.set()
        self._notifier.ready(self._update_status())
        log.info("edged ready", status=self._status)

    def _watchdog_blocker(self) -> str | None:
        """Why not to ping systemd's watchdog now (None: ping).

        Only what edged cannot fix itself withholds the ping: a dead publisher task or one of the
        supervisor's own loops, or a ready worker gone silent past its deadline (the handle is
        replacing it; if that wedges too, systemd restarts the unit). A broker outage does not.
        """
        ages = {n: a for n, h in self._handles.items() if (a := h.heartbeat_age()) is not None}
        deadlines = {n: h.config.heartbeat_timeout for n, h in self._handles.items()}
        blocker = watchdog_blocker(ages, deadlines, self._publisher.alive())
        if blocker is None:
            dead = [t.get_name() for t in self._tasks if t.get_name() != "startup" and t.done()]
            if dead:
                blocker = f"supervisor task ended: {', '.join(dead)}"
        return blocker

    async def _watchdog(self) -> None:
        await self._ready.wait()  # systemd's watchdog starts at READY=1
        await ping_watchdog(self._notifier, self._watchdog_blocker)

    async def _health_loop(self) -> None:
        await self._ready.wait()
        while True:
            self._health.rollover(self._handles)
            snapshot = self._health.snapshot(
                self._handles, self.generation, self._publisher.stats()
            )
            self._publisher.set_state("health", snapshot)
            self._update_status()
            await asyncio.sleep(self.config.node.health_interval)

    def _update_status(self) -> str:
        handles = self._handles.values()
        ready = sum(h.state is WorkerState.READY for h in handles)
        online = self._health.online()
        mqtt = "connected" if self._publisher.connected else "not connected"
        status = (
            f"{ready}/{len(self._handles)} workers ready, {online}/{len(self._health.streams)} "
            f"streams online, mqtt {mqtt}, config gen {self.generation}"
        )
        if status != self._status and self._ready.is_set() and not self._stopping:
            self._notifier.status(status)
        self._status = status
        return status

    # --- reload -------------------------------------------------------------------------------

    async def _reload_loop(self) -> None:
        await self._ready.wait()  # a SIGHUP during startup waits for it, then applies
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()  # SIGHUPs that arrive meanwhile coalesce into one more
            await self._reload()

    async def _watch_config(self) -> None:
        """Opt-in (`node.watch_config`): a changed file reloads like SIGHUP.

        The file must look the same on two checks in a row, so an editor that writes in several
        steps triggers one reload of the finished file, not one of a half-written one.
        """
        loop = asyncio.get_running_loop()
        seen = await loop.run_in_executor(None, _file_stamp, self.config_path)
        pending: tuple[int, int] | None = None
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            if not self.config.node.watch_config:
                seen = await loop.run_in_executor(None, _file_stamp, self.config_path)
                continue
            stamp = await loop.run_in_executor(None, _file_stamp, self.config_path)
            if stamp == seen:
                pending = None
            elif stamp == pending:
                log.info("config file changed; reloading", file=str(self.config_path))
                seen, pending = stamp, None
                self._reload_wanted.set()
            else:
                pending = stamp

    async def _reload(self) -> None:
        self._notifier.reloading("reloading config")
        loop = asyncio.get_running_loop()
        try:
            # Reading and checking files (models, sources) is disk I/O: off the loop.
            new, digest = await loop.run_in_executor(None, _load_with_hash, self.config_path)
        except ConfigError as exc:
            exc.log(log)
            errors = [str(p) for p in exc.problems]
            self._publish_config_state(ok=False, errors=errors)
            status = f"reload failed: {errors[0]}; running config gen {self.generation}"
            self._notifier.ready(status[:400])
            return
        diff = diff_configs(self.config, new)
        for key in diff.requires_restart:
            log.warning("setting changes only after a restart", key=key)
        await self._apply(diff, new)
        for handle in self._handles.values():
            handle.retry_now()
        self.config = new
        self.generation += 1
        self.config_hash = digest
        self._publish_config_state(ok=True, errors=[], changed=diff.summary())
        log.info("config reloaded", generation=self.generation, changes=diff.summary())
        self._notifier.ready(self._update_status())

    async def _apply(self, diff: ConfigDiff, new: Config) -> None:
        """Move what the diff says, nothing else (edged.config.diff.RELOAD decides per key)."""
        if diff.log_level_changed:
            configure_logging(new.node.log_level, process="supervisor")
            for running in self._handles.values():
                running.set_log_level(new.node.log_level)
        staying = {s.name for s in new.streams}
        for stream in diff.streams_removed:
            handle = self._handles.get(stream.worker)
            if handle is not None:
                handle.remove_stream(stream.name)
            self._health.forget_stream(stream.name)
            if stream.name not in staying:  # a reopened stream is announced by its worker
                self._publish_stream_status(
                    stream.name,
                    StreamStatus.REMOVED,
                    StreamReason.REMOVED,
                    "not in the config any more",
                )
        for name in diff.workers_removed:
            await self._handles.pop(name).stop(STOP_GRACE_S)
        self.config = new  # new workers take their streams from the new config
        for worker in diff.workers_restarted:
            handle = self._handles[worker.name]
            handle.streams = self._detecting(worker.name)
            handle.restart_with(worker)
        for worker in diff.workers_updated:
            self._handles[worker.name].update_config(worker)
        for worker in diff.workers_added:
            self._add_worker(worker)
        for stream in (*diff.streams_added, *diff.streams_updated):
            self._health.track_stream(stream.name, stream.worker)
            if self._detection.enabled(stream.name):
                self._handles[stream.worker].set_stream(stream)
            else:
                self._detection_off(stream.name)
        if diff.mqtt_changed:
            await self._publisher.reconfigure(new.mqtt, new.node, new.homeassistant)
        self._publisher.set_streams(new.streams, self._labels_of(new))
        self._events.set_streams(new.streams)
        self._publish_switches()

    def _publish_config_state(self, *, ok: bool, errors: list[str], changed: str = "") -> None:
        self._publisher.set_state(
            "config",
            {
                "generation": self.generation,
                "hash": self.config_hash,
                "ok": ok,
                "errors": errors,
                "changed": changed,
                "file": str(self.config_path),
            },
        )

    @staticmethod
    def _labels_of(config: Config) -> dict[str, tuple[str, ...]]:
        labels = {w.name: load_labels(w.labels) for w in config.workers}
        return {s.name: s.labels or labels[s.worker] for s in config.streams}


def _file_stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


def _load_with_hash(path: Path) -> tuple[Config, str]:
    return load_config(path), _file_hash(path)


def _file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""
