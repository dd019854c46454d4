"""A real RTSP server for the tests: GStreamer's gst-rtsp-server, serving video files on mounts.

Runs under the SYSTEM python (/usr/bin/python3: Debian's python3-gi and
gir1.2-gst-rtsp-server-1.0), never in the test's virtual env: tests/support/rtsp.py starts it as
a subprocess. Usage:

    /usr/bin/python3 gst_rtsp_server.py '{"port": 0, "mounts": [...]}'

A mount is {"path": "/name", "file": "/abs/video.mkv", "codec": "h264" | "h265",
"user": "...", "password": "..."} (user/password: Basic auth on that mount only). Each client
gets its own pipeline that plays the file from its first frame at its frame rate (the tests
serve files made long enough by tests/support/rtsp_media.py: a camera does not end). Prints
`READY <port>` on stdout once it listens; exits on SIGTERM or when its stdin closes, so a test
that dies leaves no server.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

DEMUXERS = {".mp4": "qtdemux", ".mov": "qtdemux", ".mkv": "matroskademux", ".avi": "avidemux"}
ROLE_ANONYMOUS = "anonymous"
ROLE_VIEWER = "viewer"


def launch_line(file: str, codec: str) -> str:
    demux = DEMUXERS[file[file.rfind(".") :].lower()]
    # The parser puts the parameter sets in band before every keyframe, as cameras do (the
    # payloader alone sends them as a separate access unit, which FFmpeg decodes into a
    # duplicate frame).
    return (
        f'( filesrc location="{file}" ! {demux} ! {codec}parse config-interval=-1 '
        f"! rtp{codec}pay name=pay0 pt=96 )"
    )


def permissions(viewer: str) -> GstRtspServer.RTSPPermissions:
    """Anyone may see the mount exists; only `viewer` may play it.

    gst-rtsp-server answers 404 to a role without ACCESS and 401 (with a Basic challenge) to one
    without CONSTRUCT: a camera with a password answers 401, not 404, to a wrong password.
    """
    perms = GstRtspServer.RTSPPermissions()
    for role in {ROLE_ANONYMOUS, viewer}:
        perms.add_permission_for_role(role, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    perms.add_permission_for_role(viewer, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    return perms


def role_token(role: str) -> GstRtspServer.RTSPToken:
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, role)
    return token


def build(spec: dict[str, Any]) -> GstRtspServer.RTSPServer:
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(spec.get("port", 0)))
    auth = GstRtspServer.RTSPAuth()
    # A client without (valid) credentials gets the anonymous role: open mounts allow it,
    # a mount with a password does not, and the server answers 401 with a Basic challenge.
    auth.set_default_token(role_token(ROLE_ANONYMOUS))
    mounts = server.get_mount_points()
    for mount in spec["mounts"]:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(mount["file"], mount["codec"]))
        factory.set_shared(False)  # every client (re)starts at the first frame, a keyframe
        if mount.get("user"):
            basic = GstRtspServer.RTSPAuth.make_basic(mount["user"], mount["password"])
            auth.add_basic(basic, role_token(ROLE_VIEWER))
            factory.set_permissions(permissions(ROLE_VIEWER))
        else:
            factory.set_permissions(permissions(ROLE_ANONYMOUS))
        mounts.add_factory(mount["path"], factory)
    server.set_auth(auth)
    return server


def missing_elements(spec: dict[str, Any]) -> list[str]:
    """Elements a client's pipeline would need that are not installed (a 503 at DESCRIBE)."""
    names = {"filesrc"}
    for mount in spec["mounts"]:
        names |= {DEMUXERS[mount["file"][mount["file"].rfind(".") :].lower()]}
        names |= {f"{mount['codec']}parse", f"rtp{mount['codec']}pay"}
    return sorted(n for n in names if Gst.ElementFactory.find(n) is None)


def main() -> int:
    spec = json.loads(sys.argv[1])
    Gst.init(None)
    missing = missing_elements(spec)
    if missing:
        print(f"ERROR GStreamer elements missing: {', '.join(missing)}", flush=True)
        return 2
    server = build(spec)
    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on port {spec.get('port', 0)}", flush=True)
        return 1
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.io_add_watch(
        GLib.IOChannel.unix_new(sys.stdin.fileno()),
        GLib.PRIORITY_DEFAULT,
        GLib.IOCondition.HUP | GLib.IOCondition.IN | GLib.IOCondition.ERR,
        lambda *_: loop.quit(),
    )
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
