"""acl.rt on the emulator: contexts per thread, memory pairing, copies per run mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.acl_emulator import PRELUDE, TEARDOWN, only_report, rules, run_snippet


def test_a_thread_without_set_context_gets_107002(tmp_path: Path) -> None:
    done = run_snippet((
        PRELUDE,
        """
        import threading
        seen = {}
        def work():
            seen["bare"] = acl.rt.malloc(64, 2)[1]
            ok(acl.rt.set_context(ctx))
            ptr, seen["with"] = acl.rt.malloc(64, 2)
            ok(acl.rt.free(ptr))
        t = threading.Thread(target=work); t.start(); t.join()
        assert seen == {"bare": 107002, "with": 0}, seen
        """,
        TEARDOWN,
    ), tmp_path)
    assert done.returncode == 0, done.stderr
    assert rules(only_report(tmp_path)) == {"7"}


def test_allocators_and_frees_pair_up(tmp_path: Path) -> None:
    done = run_snippet((
        PRELUDE,
        """
        assert acl.rt.malloc(0, 2) == (0, 100000)
        assert acl.rt.malloc(64, 7) == (0, 100000)
        d, r = acl.media.dvpp_malloc(64); ok(r)
        assert acl.rt.free(d) == 100000          # dvpp memory goes back with dvpp_free
        ok(acl.media.dvpp_free(d))
        assert acl.media.dvpp_free(d) == 100000  # double free
        """,
        TEARDOWN,
    ), tmp_path)
    assert done.returncode == 0, done.stderr
    assert rules(only_report(tmp_path)) == {"11", "12"}


@pytest.mark.parametrize(("run_mode", "d2d_code"), [("ACL_HOST", 100000), ("ACL_DEVICE", 0)])
def test_memcpy_kinds_follow_the_run_mode(tmp_path: Path, run_mode: str, d2d_code: int) -> None:
    # On a PCIe card a numpy buffer is host memory: only HOST_TO_DEVICE reaches the device.
    # On a board host and device share DDR and every kind works (pyacl.md 9a.6).
    done = run_snippet((
        PRELUDE,
        f"""
        src = np.arange(256, dtype=np.uint8)
        dev, r = acl.rt.malloc(256, 2); ok(r)
        assert acl.rt.memcpy(dev, 256, acl.util.numpy_to_ptr(src), 256, 3) == {d2d_code}
        ok(acl.rt.memcpy(dev, 256, acl.util.numpy_to_ptr(src), 256, 1))
        back = bytes(256)
        ok(acl.rt.memcpy(acl.util.bytes_to_ptr(back), 256, dev, 256, 2))
        assert back == src.tobytes()
        assert acl.rt.memcpy(dev, 100, acl.util.numpy_to_ptr(src), 256, 1) == 100000  # > max
        ok(acl.rt.free(dev))
        assert acl.rt.memcpy(dev, 256, acl.util.numpy_to_ptr(src), 256, 1) == 100000  # freed
        """,
        TEARDOWN,
    ), tmp_path, run_mode=run_mode)
    assert done.returncode == 0, done.stderr
    report = only_report(tmp_path)
    assert report["bytes_copied"]["host_to_device"] == 256 * (2 if d2d_code == 0 else 1)
    assert report["leaks"] == []


def test_reset_device_more_than_set_device_is_an_error(tmp_path: Path) -> None:
    done = run_snippet(
        """
        import acl
        assert acl.init() == 0
        assert acl.rt.set_device(0) == 0
        assert acl.rt.reset_device(0) == 0
        assert acl.rt.reset_device(0) == 100000
        assert acl.rt.set_device(3) == 107001     # one device unless ACL_EMU_DEVICES says more
        assert acl.finalize() == 0
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert rules(only_report(tmp_path)) == {"5"}
