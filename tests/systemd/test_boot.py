"""edged under a real systemd: a Debian 12 machine booted with systemd-nspawn (bootbox.py), edged
installed into it as docs/install.md says, and everything checked from outside, as an operator
would: systemctl, journalctl, /proc, MQTT.

The tests run in file order on one machine (booting it is the expensive part) and each leaves the
unit running for the next. Timings go to stderr with a `boot test:` prefix (`pytest -s` or the
failure report shows them). The watchdog is shortened to 5 s by a test-only drop-in so that a
watchdog kill takes seconds, not the shipped 30 s.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.broker import Broker
from tests.support.daemon import wait_until
from tests.support.mqtt import Message, Subscriber
from tests.systemd import bootbox
from tests.systemd.test_unit import MAX_EXPOSURE

pytestmark = pytest.mark.timeout(900)

USER, PASSWORD = "edged", "boot-test-secret-4711"
WATCHDOG_S = 5
STREAM = "road"
CONFIG = """\
[node]
name = "boot"
state_dir = "/var/lib/edged"
health_interval = 5

[mqtt]
url = "mqtt://127.0.0.1:{port}"
username = "edged"
password_credential = "mqtt-password"

[[workers]]
name = "cpu0"
model = "yolox-nano"
threads = 1

[[streams]]
name = "road"
source = "/srv/media/traffic-720p.mp4"
worker = "cpu0"
loop = true
detect_fps = 2
min_score = {min_score}
"""
# Test-only: a short watchdog. The site drop-in of docs/install.md step 7: only localhost may
# be reached, which the BPF firewall enforces (nspawn runs with --system-call-filter=bpf).
DROPINS = {
    "test-watchdog.conf": f"[Service]\nWatchdogSec={WATCHDOG_S}s\n",
    "network.conf": "[Service]\nIPAddressDeny=any\nIPAddressAllow=localhost\n",
}


class Box:
    """The booted machine with edged installed, and what the tests share about it."""

    def __init__(self, machine: bootbox.Machine, broker: Broker, tmp: Path) -> None:
        self.machine = machine
        self.broker = broker
        self.tmp = tmp
        self.exposure: dict[str, str] = {}

    def sh(self, command: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.machine.sh(command, **kw)  # type: ignore[arg-type]

    def show(self, *props: str) -> dict[str, str]:
        return self.machine.show("edged", *props)

    def write_config(self, min_score: str = "0.4", *, text: str | None = None) -> None:
        body = text if text is not None else CONFIG.format(port=self.broker.port,
                                                           min_score=min_score)
        self.sh("cat > /etc/edged/config.toml && chmod 0644 /etc/edged/config.toml", input=body)

    def cursor(self) -> str:
        out = self.sh("journalctl -u edged -n 0 --show-cursor --no-pager").stdout
        match = re.search(r"-- cursor: (\S+)", out)
        assert match, out
        return match.group(1)

    def journal(self, cursor: str, *args: str) -> str:
        return self.sh(
            f"journalctl -u edged --no-pager --after-cursor='{cursor}' " + " ".join(args)
        ).stdout

    def journal_json(self, cursor: str, *, max_priority: int = 7) -> list[dict[str, str]]:
        """Entries after `cursor`, filtered by priority here: journalctl 252 returns nothing for
        `--after-cursor` together with `-u` and `-p`."""
        out = self.journal(cursor, "-o", "json")
        entries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return [e for e in entries if int(e.get("PRIORITY", 6)) <= max_priority]

    def ensure_running(self) -> None:
        if self.show("ActiveState")["ActiveState"] != "active":
            self.sh("systemctl reset-failed edged; systemctl start edged", timeout=180)


def exposure_line(text: str) -> str:
    match = re.search(r"Overall exposure level for edged\.service: ([\d.]+ \S+)", text)
    assert match, text
    return match.group(1)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Iterator[Box]:
    bootbox.require_tools()
    tmp = tmp_path_factory.mktemp("boot")
    start = time.monotonic()
    cache = bootbox.cache_dir()
    layer = bootbox.venv_layer(cache, bootbox.base_rootfs(cache))
    bootbox.timed("cached layers ready", start)
    overlay = bootbox.Overlay(layer, tmp / "machine")
    pip_binds, pip_env = bootbox.pip_access()
    machine = bootbox.Machine(
        overlay.root,
        tmp / "nspawn.log",
        binds=(f"{assets / 'media'}:/srv/media", f"{assets / 'models'}:/srv/models", *pip_binds),
    )
    passwords = tmp / "broker-passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), USER, PASSWORD], check=True)
    broker = Broker(tmp, anonymous=False, extra_conf=[f"password_file {passwords}"])
    broker.start()
    try:
        overlay.add_source("/opt/edged/src")
        step = time.monotonic()
        machine.boot()
        bootbox.timed("boot to running", step)
        box = Box(machine, broker, tmp)
        step = time.monotonic()
        install(box, pip_env)
        bootbox.timed("install as docs/install.md says", step)
        bootbox.timed("fixture total", start)
        yield box
    except BaseException:
        print((tmp / "nspawn.log").read_text(errors="replace")[-6000:])
        raise
    finally:
        with_journal = machine.leader and machine.sh(
            "journalctl -u edged --no-pager -n 80", check=False
        ).stdout
        if with_journal:
            print("edged's journal, last lines:\n" + with_journal)
        machine.poweroff()
        overlay.remove()
        broker.stop()
        bootbox.timed("whole module", start)


def install(box: Box, pip_env: tuple[str, ...]) -> None:
    """docs/install.md, step by step, as root in the machine."""
    sh = box.sh
    # 1. the user
    sh("useradd --system --user-group --home-dir /var/lib/edged --no-create-home "
       "--shell /usr/sbin/nologin edged")
    # 2. edged into /opt/edged/venv (the venv with its dependencies is the cached layer)
    env = " ".join(shlex.quote(e) for e in pip_env)
    sh(f"env {env} /opt/edged/venv/bin/pip install -q /opt/edged/src", timeout=300)
    # 3. configuration
    sh("install -d -m 0755 /etc/edged")
    box.write_config()
    # 4. the MQTT password as a credential
    sh("install -d -m 0700 /etc/edged/credentials && "
       "install -m 0600 /dev/null /etc/edged/credentials/mqtt-password && "
       "cat > /etc/edged/credentials/mqtt-password", input=PASSWORD)
    # 5. the model, fetched as the service user (--from: the machine has no internet)
    sh("install -d -o edged -g edged -m 0750 /var/lib/edged")
    sh("cd /var/lib/edged && runuser -u edged -- "
       "/opt/edged/venv/bin/edged models fetch yolox-nano --from /srv/models/yolox_nano.onnx "
       "--state-dir /var/lib/edged")
    # 6. the unit
    sh("install -m 0644 /opt/edged/src/systemd/edged.service /etc/systemd/system/edged.service")
    sh("systemctl daemon-reload")
    verify = sh("systemd-analyze verify /etc/systemd/system/edged.service 2>&1")
    assert verify.stdout.strip() == "", verify.stdout
    # The online score of the shipped unit as loaded, before any drop-in.
    box.exposure["shipped online"] = exposure_line(sh("systemd-analyze security edged").stdout)
    box.exposure["shipped offline"] = exposure_line(
        sh("systemd-analyze security --offline=yes /etc/systemd/system/edged.service").stdout
    )
    # 7. drop-ins
    sh("install -d /etc/systemd/system/edged.service.d")
    for name, text in DROPINS.items():
        sh(f"cat > /etc/systemd/system/edged.service.d/{name}", input=text)
    sh("systemctl daemon-reload && systemctl enable edged 2>&1")
    box.exposure["with the network drop-in"] = exposure_line(
        sh("systemd-analyze security edged").stdout
    )


def detections(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.topic == f"edged/boot/{STREAM}/detections"]


def test_start_reaches_active_through_ready_with_its_status(box: Box) -> None:
    start = time.monotonic()
    box.sh("systemctl start edged", timeout=180)  # returns at READY=1 (Type=notify)
    bootbox.timed("systemctl start edged -> active", start)
    state = box.show("ActiveState", "SubState", "StatusText", "NRestarts", "Type")
    assert state["Type"] == "notify"
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    # At READY=1 the worker has loaded its model and MQTT is up; the stream may still be opening.
    assert re.fullmatch(
        r"1/1 workers ready, [01]/1 streams online, mqtt connected, config gen 1",
        state["StatusText"],
    ), state
    assert state["NRestarts"] == "0"
    online = "1/1 workers ready, 1/1 streams online, mqtt connected, config gen 1"
    wait_until(lambda: box.show("StatusText")["StatusText"] == online, 60, online)
    bootbox.timed("systemctl start edged -> stream online in STATUS", start)


def test_detections_reach_the_password_protected_broker_through_the_credential(
    box: Box,
) -> None:
    box.ensure_running()
    subscriber = Subscriber(box.broker.port, username=USER, password=PASSWORD)
    try:
        messages = subscriber.wait_for(lambda m: len(detections(m)) >= 3, 60, "3 detections")
    finally:
        subscriber.close()
    labels = [d["label"] for m in detections(messages) for d in m.json()["detections"]]
    assert "car" in labels, labels[:40]
    # The secret is read from $CREDENTIALS_DIRECTORY and appears nowhere in the journal.
    assert PASSWORD not in box.sh("journalctl --no-pager -o verbose").stdout


def worker_policies(box: Box) -> dict[int, dict[int, int]]:
    """Worker pid -> {thread id: scheduling policy} (0 SCHED_OTHER, 3 SCHED_BATCH), read in the
    machine's /proc (`chrt -p` reads the same)."""
    main = box.show("MainPID")["MainPID"]
    script = (
        # multiprocessing's workers run spawn_main; its resource tracker is a child too.
        f"for c in $(cat /proc/{main}/task/*/children); do "
        "grep -q spawn_main /proc/$c/cmdline || continue; for t in /proc/$c/task/*; do "
        "echo \"$c $(basename $t) $(sed -n 's/^policy *: *//p' $t/sched)\"; done; done"
    )
    out: dict[int, dict[int, int]] = {}
    for line in box.sh(script).stdout.splitlines():
        pid, tid, policy = (int(x) for x in line.split())
        out.setdefault(pid, {})[tid] = policy
    return out


def test_decode_threads_run_sched_batch_under_the_unit(box: Box) -> None:
    box.ensure_running()
    workers = worker_policies(box)
    assert len(workers) == 1, workers
    [(pid, threads)] = workers.items()
    # Python 3.11 gives its threads no OS names, so the decode thread is told apart by its
    # policy: the stream's decoder (and the threads its codec starts from it, which inherit
    # the policy) runs SCHED_BATCH; the main thread and the inference loop keep SCHED_OTHER.
    assert threads[pid] == 0, threads
    assert 3 in threads.values(), threads
    assert 0 in [p for tid, p in threads.items() if tid != pid], threads
    assert "SCHED_BATCH refused" not in box.sh("journalctl -u edged -b -p warning").stdout


def test_etc_edged_is_read_only_for_the_service_and_nothing_writes_telemetry(box: Box) -> None:
    box.ensure_running()
    main = box.show("MainPID")["MainPID"]
    # In the service's own mount namespace, as edged sees it.
    options = box.sh(f"nsenter -t {main} -m findmnt -no OPTIONS -T /etc/edged").stdout
    assert options.split(",")[0] == "ro", options
    state = box.sh("cd /var/lib/edged && find . -mindepth 1 | sort").stdout.split()
    assert not [p for p in state if p.startswith("./.cache")], state
    assert "./models/yolox_nano.onnx" in state, state


def test_journal_entries_carry_edged_fields_and_priorities(box: Box) -> None:
    box.ensure_running()
    entries = [
        json.loads(line)
        for line in box.sh("journalctl -u edged -b -o json --no-pager").stdout.splitlines()
    ]
    ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "edged"]
    processes = {e.get("EDGED_PROCESS") for e in ours}
    assert {"supervisor", "worker:cpu0"} <= processes, processes
    ready = [e for e in ours if e["MESSAGE"].startswith("edged ready")]
    assert ready and ready[-1]["PRIORITY"] == "6", ready
    assert all("CODE_FILE" in e and "EDGED_LOGGER" in e for e in ours[:20]), ours[:3]
    streams = box.sh("journalctl -u edged -b --no-pager -o json EDGED_STREAM=road").stdout
    assert streams.strip(), "no entry with EDGED_STREAM=road"


def test_live_reload_applies_and_a_bad_reload_keeps_the_running_config(box: Box) -> None:
    box.ensure_running()
    generation = int(box.show("StatusText")["StatusText"].rsplit(" ", 1)[1])
    box.write_config(min_score="0.5")
    start = time.monotonic()
    box.sh("systemctl reload edged")

    def status() -> str:
        return box.show("StatusText")["StatusText"]

    wait_until(lambda: status().endswith(f"config gen {generation + 1}"), 60, "reload applied")
    bootbox.timed("systemctl reload edged -> new config generation in STATUS", start)
    cursor = box.cursor()
    box.write_config(text=CONFIG.format(port=box.broker.port, min_score="0.5").replace(
        "detect_fps = 2", 'detect_fps = "fast"'
    ))
    box.sh("systemctl reload edged")
    wait_until(lambda: status().startswith("reload failed:"), 60, "reload failed in STATUS")
    text = status()
    assert "streams[0].detect_fps" in text, text
    assert text.endswith(f"running config gen {generation + 1}"), text
    state = box.show("ActiveState", "MainPID", "NRestarts")
    assert state["ActiveState"] == "active", state

    def keys() -> list[str]:
        # journald may index the entry a moment after systemd has the STATUS.
        return [e["EDGED_KEY"] for e in box.journal_json(cursor, max_priority=3)
                if "EDGED_KEY" in e]

    wait_until(lambda: keys() != [], 10, "the rejected key in the journal")
    assert keys() == ["streams[0].detect_fps"], box.journal(cursor)
    box.write_config()
    box.sh("systemctl reload edged")
    wait_until(lambda: status().endswith(f"config gen {generation + 2}"), 60, "reload back")


def host_address() -> str:
    """An IPv4 address of this host other than loopback (the machine shares the network)."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    raise AssertionError("this host has no IPv4 address besides loopback")


def test_the_ip_allow_list_is_enforced_by_the_kernel(box: Box) -> None:
    # network.conf allows localhost only. The broker listens on 127.0.0.1, so at the host's
    # other address the kernel refuses at once (ECONNREFUSED); under the unit, the BPF firewall
    # drops the SYN and the connect times out. Without bpf() in the container, systemd would
    # silently not apply IPAddressDeny= and edged would see the refusal.
    box.ensure_running()
    address = host_address()
    connect = f"import socket; socket.create_connection(('{address}', {box.broker.port}), 5)"
    plain = box.sh(f'python3 -c "{connect}" 2>&1', check=False).stdout
    assert "ConnectionRefusedError" in plain, plain
    cursor = box.cursor()
    moved = CONFIG.format(port=box.broker.port, min_score="0.4").replace(
        "127.0.0.1", address
    )
    try:
        box.write_config(text=moved)
        box.sh("systemctl reload edged")

        def refused() -> list[str]:
            return [
                e["MESSAGE"] for e in box.journal_json(cursor, max_priority=4)
                if e["MESSAGE"].startswith("mqtt_connect_failed")
            ]

        wait_until(lambda: refused() != [], 30, "a failed connect to the broker's other address")
        assert "timed out" in refused()[0], refused()
    finally:
        box.write_config()
        box.sh("systemctl reload edged")
    online = "mqtt connected"
    wait_until(lambda: online in box.show("StatusText")["StatusText"], 60, online)


def test_watchdog_kills_and_restarts_a_stopped_supervisor(box: Box) -> None:
    box.ensure_running()
    before = box.show("MainPID", "NRestarts")
    cursor = box.cursor()
    stopped = time.monotonic()
    box.sh(f"kill -STOP {before['MainPID']}")
    killed = restarted = 0.0
    deadline = stopped + WATCHDOG_S * 4 + 60
    while time.monotonic() < deadline:
        state = box.show("ActiveState", "MainPID", "NRestarts")
        if not killed and state["MainPID"] != before["MainPID"]:
            killed = time.monotonic()
        if killed and state["ActiveState"] == "active" and state["MainPID"] not in ("0", before[
            "MainPID"
        ]):
            restarted = time.monotonic()
            break
        time.sleep(0.1)
    assert killed and restarted, (box.journal(cursor), state)
    bootbox.note(f"watchdog: SIGSTOP -> supervisor gone {killed - stopped:.1f} s "
                 f"(WatchdogSec={WATCHDOG_S}s), gone -> active again {restarted - killed:.1f} s")
    # The timeout runs from the last ping, which came at most half a WatchdogSec before the stop.
    assert killed - stopped >= WATCHDOG_S / 2 - 0.2
    assert int(state["NRestarts"]) == int(before["NRestarts"]) + 1
    log = box.journal(cursor)
    assert "Watchdog timeout" in log, log
    # faulthandler's stacks: the operator sees where the supervisor hung.
    assert "Fatal Python error: Aborted" in log and "File " in log, log


def test_clean_stop_leaves_nothing_in_the_cgroup_and_kills_nothing(box: Box) -> None:
    box.ensure_running()
    cursor = box.cursor()
    start = time.monotonic()
    box.sh("systemctl stop edged", timeout=60)
    bootbox.timed("systemctl stop edged", start)
    state = box.show("ActiveState", "Result", "ExecMainStatus", "StatusText")
    assert state["ActiveState"] == "inactive" and state["Result"] == "success", state
    assert state["ExecMainStatus"] == "0", state
    assert state["StatusText"].startswith("stopped: workers stopped, "), state
    left = box.sh("grep -l 'edged.service' /proc/[0-9]*/cgroup 2>/dev/null || true").stdout
    assert left.strip() == "", left
    log = box.journal(cursor)
    assert "SIGKILL" not in log and "Killing process" not in log, log


def test_a_config_error_at_start_fails_the_unit_at_once_and_says_why_at_warning(box: Box) -> None:
    box.sh("systemctl stop edged")
    box.write_config(text=CONFIG.format(port=box.broker.port, min_score="0.4").replace(
        "threads = 1", "threads = 0"
    ))
    cursor = box.cursor()
    try:
        started = box.sh("systemctl start edged", check=False, timeout=60)
        assert started.returncode != 0
        state = box.show("ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts")
        # failed, not auto-restart: RestartPreventExitStatus=2.
        assert (state["ActiveState"], state["SubState"]) == ("failed", "failed"), state
        assert state["ExecMainStatus"] == "2" and state["NRestarts"] == "0", state
        # What the operator runs (docs/install.md): the reason is there at -p warning.
        warning = box.sh("journalctl -u edged -b -p warning --no-pager").stdout
        assert "config rejected key=workers[0].threads" in warning, warning
        keys = [e.get("EDGED_KEY") for e in box.journal_json(cursor, max_priority=4)]
        assert "workers[0].threads" in keys, keys
    finally:
        box.write_config()
        box.sh("systemctl reset-failed edged; systemctl start edged", timeout=180)


def test_the_operators_check_config_finds_the_fetched_model(box: Box) -> None:
    # As root, outside the unit, as docs/install.md says: with node.state_dir in the config...
    check = "/opt/edged/venv/bin/edged check-config"
    done = box.sh(f"{check} /etc/edged/config.toml")
    assert "ok (1 workers, 1 streams)" in done.stdout, done.stdout
    # ...or, for a config without it, --state-dir; without either, root's own state dir.
    box.sh("grep -v '^state_dir' /etc/edged/config.toml > /root/plain.toml")
    lost = box.sh(f"{check} /root/plain.toml", check=False)
    assert lost.returncode == 2 and "not fetched yet" in lost.stderr, lost.stderr
    found = box.sh(f"{check} --state-dir /var/lib/edged /root/plain.toml")
    assert "ok (1 workers, 1 streams)" in found.stdout, found.stdout


def test_online_exposure_score(box: Box) -> None:
    bootbox.note(f"systemd-analyze security: {box.exposure}")
    for key, line in box.exposure.items():
        assert float(line.split()[0]) <= MAX_EXPOSURE, (key, line)
    # Online (as loaded by systemd) is what offline promises.
    assert box.exposure["shipped online"] == box.exposure["shipped offline"], box.exposure
