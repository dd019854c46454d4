"""Download a catalogue model into `<state_dir>/models/` and verify its pinned sha256.

Runs in the `edged models fetch` command (a short-lived process started by a person or by a
provisioning script), never in the daemon: the daemon only reads the file this leaves behind.

On failure nothing is left in the models folder but what was there before: the download goes
into a hidden temp file next to the target, is hashed as it arrives, and is renamed over the
target only after the size and sha256 match the catalogue. Every failure (unknown name, network,
hash or size mismatch, disk) raises `FetchError` with a message meant for the person at the
terminal: what was expected, what came, from where, and what to do next.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from edged import __version__
from edged.modelstore.catalog import CATALOG, CatalogEntry

_CHUNK = 64 * 1024

OFFLINE_HINT = (
    "no internet? download it elsewhere and use --from FILE, or point `model` at a local file"
)

Progress = Callable[[int, int], None]


class FetchError(Exception):
    """A model could not be fetched; the message says why and what to try."""


def catalog_entry(name: str) -> CatalogEntry:
    """The catalogue entry for `name`; `FetchError` listing the known names if there is none."""
    entry = CATALOG.get(name)
    if entry is None:
        known = ", ".join(sorted(CATALOG))
        raise FetchError(f"unknown model {name!r}; known models: {known}")
    return entry


def model_path(name: str, state_dir: Path) -> Path:
    """Where `fetch_model(name, state_dir)` puts the file (the same place `resolve_model` looks)."""
    return state_dir / "models" / catalog_entry(name).filename


def file_sha256(path: Path) -> tuple[str, int]:
    """(hex sha256, size in bytes) of a file, read in chunks so a large file costs no memory."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def is_fetched(name: str, state_dir: Path) -> bool:
    """True if the model is in the state directory with its pinned size and sha256."""
    entry = catalog_entry(name)
    path = model_path(name, state_dir)
    try:
        if path.stat().st_size != entry.size:
            return False
        return file_sha256(path)[0] == entry.sha256
    except OSError:
        return False


def fetch_model(
    name: str,
    state_dir: Path,
    *,
    url: str | None = None,
    from_file: Path | None = None,
    progress: Progress | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch catalogue model `name` into `<state_dir>/models/<filename>` and return that path.

    `url` replaces the catalogue URL (a mirror, a local server); the pinned sha256 still applies.
    `from_file` copies a local file instead of downloading, with the same verification.
    `progress(done, total)` is called as bytes arrive; `total` is the catalogue size.
    `timeout` bounds the connect and each read, not the whole download.
    If the target already has the pinned hash nothing is done (see `is_fetched`).
    """
    entry = catalog_entry(name)
    if url is not None and from_file is not None:
        raise FetchError("give either a URL or a local file to copy from, not both")
    target = model_path(name, state_dir)
    if is_fetched(name, state_dir):
        return target

    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create {folder}: {exc.strerror or exc}") from exc

    if from_file is not None:
        source = str(from_file)
        try:
            src: BinaryIO = from_file.open("rb")
        except OSError as exc:
            raise FetchError(f"cannot read {from_file}: {exc.strerror or exc}") from exc
        with src:
            tmp = _receive(
                entry, name, source, _read_file(src, source), folder=folder, progress=progress
            )
    else:
        source = url or entry.url
        with _open_url(source, timeout) as response:
            chunks = _read_response(response, source)
            tmp = _receive(entry, name, source, chunks, folder=folder, progress=progress)

    try:
        # Atomic on one filesystem: a reader (the daemon, `resolve_model`) sees the old file or
        # the whole verified new one, never a partial file.
        os.replace(tmp, target)
        _fsync_dir(folder)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"cannot move the model into {target}: {exc.strerror or exc}") from exc
    return target


def _open_url(url: str, timeout: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": f"edged/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        # The server answered: a wrong or moved URL, not a missing network; no offline hint.
        exc.close()
        raise FetchError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot download {url}: {exc.reason}; {OFFLINE_HINT}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # TimeoutError, resets, malformed answers, and urllib's ValueError for a bad URL.
        raise FetchError(f"cannot download {url}: {_reason(exc)}; {OFFLINE_HINT}") from exc
    if not isinstance(response, http.client.HTTPResponse):
        # file:// and ftp:// give other response types; only HTTP(S) is supported.
        response.close()
        raise FetchError(f"cannot download {url}: only http:// and https:// URLs are supported")
    return response


def _read_response(response: http.client.HTTPResponse, url: str) -> Iterator[bytes]:
    while True:
        try:
            chunk = response.read(_CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(
                f"download of {url} broke off: {_reason(exc)}; {OFFLINE_HINT}"
            ) from exc
        if not chunk:
            return
        yield chunk


def _read_file(f: BinaryIO, path: str) -> Iterator[bytes]:
    while True:
        try:
            chunk = f.read(_CHUNK)
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if not chunk:
            return
        yield chunk


def _receive(
    entry: CatalogEntry,
    name: str,
    source: str,
    chunks: Iterator[bytes],
    *,
    folder: Path,
    progress: Progress | None,
) -> Path:
    """Write `chunks` into a temp file in `folder`, verify it, return its path (or raise)."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{entry.filename}.", suffix=".part")
    except OSError as exc:
        raise FetchError(f"cannot write in {folder}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        done = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                done += len(chunk)
                if done > entry.size:
                    # Stop early: a wrong URL serving something huge must not fill the disk.
                    raise FetchError(
                        f"{name} from {source} is larger than the expected {entry.size} bytes; "
                        "wrong URL or file? nothing was kept"
                    )
                digest.update(chunk)
                _write(out, chunk, tmp)
                if progress is not None:
                    progress(done, entry.size)
            got = digest.hexdigest()
            if done != entry.size or got != entry.sha256:
                raise FetchError(
                    f"{name} from {source} does not match its pinned hash: "
                    f"expected sha256 {entry.sha256} ({entry.size} bytes), "
                    f"got sha256 {got} ({done} bytes); nothing was kept"
                )
            try:
                out.flush()
                # Data on disk before the rename, so a power cut cannot leave a renamed
                # but empty or partial model that would then pass the existence check.
                os.fsync(out.fileno())
            except OSError as exc:
                raise FetchError(f"cannot write {tmp}: {exc.strerror or exc}") from exc
        # mkstemp makes the file 0600; the daemon may run as another user (systemd), and the
        # model is public data.
        tmp.chmod(0o644)
    except BaseException:
        # Includes Ctrl-C: never leave a partial file behind.
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _write(out: BinaryIO, chunk: bytes, tmp: Path) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise FetchError(f"cannot write {tmp}: {exc.strerror or exc}") from exc


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable. Best effort: some filesystems refuse to fsync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
