"""A Debian 12 machine booted with systemd-nspawn, for the boot test (tests/systemd/test_boot.py).

Runs in the test process, as root: debootstrap builds a minimal root filesystem, a second layer
adds /opt/edged/venv with edged's dependencies from PyPI, and both are cached in
$EDGED_BOOT_CACHE (default /var/cache/edged-boot-test), keyed by what they contain, so a later run
on the same machine starts from the cache and a changed package list or pyproject.toml builds
afresh. Each run boots an overlay over the cached layer (nothing a run does reaches the cache)
and talks to the container from outside with `nsenter` into its PID 1's namespaces, which is
what `machinectl shell` does where a systemd-machined runs (this sandbox's PID 1 is not
systemd, so nspawn runs with --register=no). The container shares the host's network, so edged
inside reaches the test's mosquitto on 127.0.0.1.

`--system-call-filter=bpf`: nspawn's default seccomp filter denies bpf(), and the container's
systemd then silently ignores DeviceAllow= and IPAddressDeny=; with bpf allowed they are real.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
# What a box edged is installed on needs; the rest comes with docs/install.md's steps.
# procps: the unit's ExecReload= runs /bin/kill (every Debian install but minbase has it).
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "procps", "python3", "python3-venv", "ca-certificates"
)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nsenter": "util-linux",
}


# Every figure of this run, for the test module to show at its end (tests/systemd/test_boot.py).
FIGURES: list[str] = []


def note(line: str) -> None:
    """Keep a figure line and print it on stderr (seen with pytest -s and in a failure report)."""
    FIGURES.append(f"boot test: {line}")
    print(f"boot test: {line}", file=sys.stderr, flush=True)


def timed(label: str, start: float) -> None:
    note(f"{label}: {time.monotonic() - start:.1f} s")


def require_tools() -> None:
    """Fail loudly, saying how to install, when the host cannot run the test."""
    if os.geteuid() != 0:
        raise RuntimeError("the boot test needs root (debootstrap, mount, systemd-nspawn)")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise RuntimeError(
            f"missing {', '.join(missing)}: run scripts/setup.sh --dev "
            f"(apt-get install {' '.join(missing)})"
        )


def cache_dir() -> Path:
    path = Path(os.environ.get("EDGED_BOOT_CACHE") or "/var/cache/edged-boot-test")
    path.mkdir(parents=True, exist_ok=True)
    return path


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses (the only one a sandboxed CI may reach)."""
    if os.environ.get("EDGED_BOOT_MIRROR"):
        return os.environ["EDGED_BOOT_MIRROR"]
    uris: list[str] = []
    for file in sorted(Path("/etc/apt").glob("sources.list*")) + sorted(
        Path("/etc/apt/sources.list.d").glob("*")
    ):
        if not file.is_file() or file.name.endswith((".disabled", ".save")) or "disabled" in (
            file.name
        ):
            continue
        text = file.read_text(errors="replace")
        uris += re.findall(r"^URIs:\s*(\S+)", text, re.M)
        uris += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", text, re.M)
    for uri in uris:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    return "http://deb.debian.org/debian"


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    # Two test runs on one machine build a layer once; the second waits and reuses it.
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# A layer unused for this long is deleted when another is built. Not at once: a run from another
# checkout (other dependencies) may have it mounted as its overlay's lower layer right now.
STALE_S = 24 * 3600


def _used(layer: Path) -> Path:
    # A marker beside the layer, not the layer itself: a mounted overlay's lower layer must not
    # change.
    layer.with_name(layer.name + ".used").touch()
    return layer


def _prune(cache: Path, prefix: str, keep: Path) -> None:
    for old in cache.glob(f"{prefix}-*"):
        if old == keep or old.suffix in (".used", ".building"):
            continue
        marker = old.with_name(old.name + ".used")
        last = marker.stat().st_mtime if marker.exists() else old.stat().st_mtime
        if time.time() - last > STALE_S:
            shutil.rmtree(old, ignore_errors=True)
            marker.unlink(missing_ok=True)


def nspawn_run(
    root: Path,
    command: str,
    *,
    binds: tuple[str, ...] = (),
    binds_ro: tuple[str, ...] = (),
    env: tuple[str, ...] = (),
    timeout: float,
) -> None:
    """Run a shell command in `root` as a plain container (no boot), failing with its output."""
    args = ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "--pipe", "-D", str(root)]
    args += [f"--bind={b}" for b in binds] + [f"--bind-ro={b}" for b in binds_ro]
    args += ["/usr/bin/env", "-i", f"PATH={PATH}", "HOME=/root", "LC_ALL=C.UTF-8", *env]
    done = subprocess.run(
        [*args, "/bin/sh", "-ec", command], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"in {root}: {command!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )


def base_rootfs(cache: Path) -> Path:
    """Debian 12 minbase plus PACKAGES, made by debootstrap once per package list and mirror."""
    mirror = debian_mirror()
    target = cache / f"debian12-{_key(SUITE, mirror, *PACKAGES)}"
    with _locked(cache):
        if (target / "usr/lib/systemd/systemd").exists():
            return _used(target)
        start = time.monotonic()
        building = target.with_name(target.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
             str(building), mirror],
            capture_output=True, text=True, timeout=900,
        )
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap from {mirror} failed:\n{done.stdout[-4000:]}\n"
                               f"{done.stderr[-4000:]}")
        _used(building.rename(target))
        _prune(cache, "debian12", target)
        timed(f"debootstrap {SUITE} from {mirror}", start)
    return target


def dependencies() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


# Where pip in the machine finds the CA bundle pip on the host trusts (see `pip_access`).
MACHINE_CA = "/etc/ssl/edged-boot-host-ca.pem"
_PASSED_THROUGH = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT", "HTTPS_PROXY",
                   "HTTP_PROXY", "https_proxy", "http_proxy", "NO_PROXY", "no_proxy")


def pip_access() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(read-only binds, environment) for pip in the machine to reach PyPI as pip on the host
    does: its index and proxy settings, and the CA bundle the host names, if any (a network that
    inspects TLS signs with its own CA, which Debian's bundle in the machine does not hold)."""
    env = [f"{k}={os.environ[k]}" for k in _PASSED_THROUGH if os.environ.get(k)]
    binds: list[str] = []
    for key in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        bundle = os.environ.get(key)
        if bundle and Path(bundle).is_file():
            binds.append(f"{Path(bundle).resolve()}:{MACHINE_CA}")
            env.append(f"PIP_CERT={MACHINE_CA}")
            break
    return tuple(binds), tuple(env)


def pip_cache() -> Path:
    path = Path(os.environ.get("PIP_CACHE_DIR") or Path.home() / ".cache" / "pip")
    path.mkdir(parents=True, exist_ok=True)
    return path


def venv_layer(cache: Path, base: Path) -> Path:
    """The base plus /opt/edged/venv holding edged's dependencies (pip, from PyPI), cached per
    dependency list; edged itself is installed into each run's overlay."""
    deps = dependencies()
    target = cache / f"venv-{_key(base.name, *deps)}"
    with _locked(cache):
        if (target / "opt/edged/venv/bin/python").exists():
            return _used(target)
        start = time.monotonic()
        building = target.with_name(target.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(building)], check=True)
        quoted = " ".join(f"'{d}'" for d in deps)
        binds_ro, env = pip_access()
        nspawn_run(
            building,
            "python3 -m venv /opt/edged/venv\n"
            "/opt/edged/venv/bin/pip install -q --upgrade pip\n"
            f"/opt/edged/venv/bin/pip install -q {quoted}",
            binds=(f"{pip_cache()}:/root/.cache/pip",),
            binds_ro=binds_ro,
            env=env,
            timeout=900,
        )
        _used(building.rename(target))
        _prune(cache, "venv", target)
        timed("venv layer with edged's dependencies from PyPI", start)
    return target


def source_files() -> list[str]:
    """The working tree as git sees it: tracked and untracked-but-not-ignored files."""
    out = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "-co", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout
    return [name for name in out.decode().split("\0") if name and (REPO / name).is_file()]


class Overlay:
    """A writable overlay over a cached layer: one run's machine, thrown away afterwards."""

    def __init__(self, lower: Path, workdir: Path) -> None:
        self.root = workdir / "root"
        self._upper, self._work = workdir / "upper", workdir / "work"
        for path in (self.root, self._upper, self._work):
            path.mkdir(parents=True)
        options = f"lowerdir={lower},upperdir={self._upper},workdir={self._work}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)],
                       check=True)

    def add_source(self, dest: str) -> None:
        """Copy the working tree to `dest` inside the machine (pip installs from there)."""
        target = self.root / dest.lstrip("/")
        for name in source_files():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, path)

    def remove(self) -> None:
        subprocess.run(["umount", "-l", str(self.root)], check=False)
        shutil.rmtree(self.root.parent, ignore_errors=True)


class Machine:
    """The booted container. `sh` runs a command inside as root, like an operator's shell."""

    def __init__(self, root: Path, log: Path, binds: tuple[str, ...]) -> None:
        self.root = root
        self.log = log
        self._binds = binds
        self._proc: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def boot(self, timeout: float = 120) -> None:
        args = [
            "systemd-nspawn", "--register=no", "--keep-unit", "--console=passive",
            "--system-call-filter=bpf", f"--machine=edged-boot-{os.getpid()}",
            "-D", str(self.root), *(f"--bind-ro={b}" for b in self._binds), "--boot",
        ]
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        # nspawn forks twice (the inner child is reparented to nspawn, its subreaper): the
        # leader is the child of nspawn that runs systemd, once it has exec'd it.
        while not self.leader:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"systemd-nspawn did not boot:\n{self.log.read_text()[-4000:]}")
            children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children")
            with contextlib.suppress(OSError, ValueError):
                for pid in children.read_text().split():
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        self.leader = int(pid)
            time.sleep(0.05)
        state = ""
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running --wait", check=False,
                            timeout=max(deadline - time.monotonic(), 1)).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the container did not finish booting (state {state!r})")

    def sh(
        self, command: str, *, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        args = ["nsenter", "-t", str(self.leader), "-a", "/usr/bin/env", "-i", f"PATH={PATH}",
                "HOME=/root", "LC_ALL=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
                "/bin/sh", "-c", command]
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise AssertionError(
                f"in the machine: {command!r} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """`systemctl show` properties as a dict."""
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def poweroff(self, timeout: float = 60) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None and self.leader:
            self.sh("systemctl poweroff", check=False, timeout=10)
        elif self._proc.poll() is None:
            timeout = 0  # not booted far enough to be asked: halt it through nspawn
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # nspawn's own halt request, then the hard way.
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(15)
        self._proc = None
