"""End to end with real RTSP cameras: `edged run` (spawned worker, real model) against
gst-rtsp-server and misbehaving servers, seen through a real mosquitto.

A dead camera never delays a healthy one, at its first detection or at a reconnect; a frozen
camera is offline within its stall_timeout; RTSP over TCP and over UDP both deliver. Scenario runs
live in tests/support/rtsp_scenarios.py, which also prints the closing note's table. Reasons and
passwords against a real daemon: tests/worker/test_sources_secrets.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.broker import Broker
from tests.support.daemon import Daemon
from tests.support.mqtt import Message, Subscriber
from tests.support.rtsp import RtspServer
from tests.support.rtsp_faults import Proxy
from tests.support.rtsp_scenarios import (
    STALL_TIMEOUT,
    StreamSpec,
    Timings,
    config,
    detections_with_boxes,
    healthy_camera_run,
    running,
)


def test_dead_neighbours_do_not_delay_a_healthy_camera_and_a_freeze_is_caught_in_time(
    tmp_path: Path, assets: Path, broker: Broker, rtsp_server: RtspServer
) -> None:
    # Alone, beside two dead cameras, beside them again, alone again (ABBA): load that drifts
    # over the test weighs on both sides alike, and each side's best run is compared, as a
    # moment of load on this shared 2-core box can only add time. Dead cameras that held the
    # healthy one up would add their open_timeout (10 s) to every run.
    runs: dict[int, list[Timings]] = {0: [], 2: []}
    for dead in (0, 2, 2, 0):
        runs[dead].append(
            healthy_camera_run(
                assets,
                tmp_path / f"dead{dead}-{len(runs[dead])}",
                broker,
                rtsp_server,
                path="/h264",
                dead=dead,
                freeze=not runs[dead],  # once each: the freeze ends the camera for that run
            )
        )
    print("\n".join(f"{dead} dead: {run}" for dead, rs in runs.items() for run in rs))
    alone, beside = runs[0], runs[2]
    for run in beside:
        assert run.dead_reasons == ("no_answer", "no_answer"), run
    for measure in ("first_detection", "reconnect"):
        best_alone = min(getattr(run, measure) for run in alone)
        best_beside = min(getattr(run, measure) for run in beside)
        assert abs(best_beside - best_alone) <= 1.0, (measure, alone, beside)
    for run in (alone[0], beside[0]):
        assert run.freeze_reason == "stalled", run
        assert run.freeze_detected is not None
        # Offline within stall_timeout of the last frame, plus the way to the subscriber; not
        # before it (the frames in flight when the proxy froze still count as frames).
        assert STALL_TIMEOUT - 0.5 <= run.freeze_detected <= STALL_TIMEOUT + 1.0, run


def test_rtsp_over_tcp_and_over_udp_both_deliver(
    tmp_path: Path, assets: Path, broker: Broker, rtsp_server: RtspServer
) -> None:
    """Each camera behind its own proxy: over TCP the video goes through it, over UDP only the
    RTSP dialogue does (so the transport asked for is the one used)."""
    with Proxy(rtsp_server.port) as tcp, Proxy(rtsp_server.port) as udp:
        streams = [
            StreamSpec("over-tcp", tcp.url("/h264"), {"rtsp_transport": "tcp"}),
            StreamSpec("over-udp", udp.url("/h265"), {"rtsp_transport": "udp"}),
        ]
        subscriber = Subscriber(broker.port)
        daemon = Daemon(tmp_path, config(assets, broker, tmp_path / "state", streams))
        try:
            with running(daemon):

                def enough(messages: list[Message]) -> bool:
                    return all(len(detections_with_boxes(messages, s.name)) >= 5 for s in streams)

                subscriber.wait_for(enough, 90, "5 detections on each stream")
                tcp_bytes, udp_bytes = tcp.bytes_down, udp.bytes_down
        finally:
            subscriber.close()
    assert tcp_bytes > 100_000, tcp_bytes  # seconds of 720p video went through the RTSP connection
    assert udp_bytes < tcp_bytes / 20, (tcp_bytes, udp_bytes)  # only RTSP replies did
