"""The emulator's process rules: init/finalize, fork, the report, calls that never raise."""

from __future__ import annotations

from pathlib import Path

from tests.support.acl_emulator import PRELUDE, TEARDOWN, only_report, reports, rules, run_snippet


def test_a_clean_program_leaves_an_empty_report(tmp_path: Path) -> None:
    done = run_snippet(
        (PRELUDE, "p, r = acl.rt.malloc(64, 2); ok(r); ok(acl.rt.free(p))", TEARDOWN), tmp_path
    )
    assert done.returncode == 0, done.stderr
    report = only_report(tmp_path)
    assert report["violations"] == [] and report["leaks"] == []
    assert report["finalized"]


def test_get_run_mode_and_app_log_work_before_init_other_calls_do_not(tmp_path: Path) -> None:
    # acllite asks for the run mode at import time (pyacl.md 9a.1) and logs from any thread.
    done = run_snippet(
        """
        import acl
        assert acl.rt.get_run_mode() == (0, 0), acl.rt.get_run_mode()
        assert acl.app_log(1, "hello") is None
        ptr, ret = acl.rt.malloc(64, 2)
        assert (ptr, ret) == (0, 100001), (ptr, ret)
        """,
        tmp_path,
        run_mode="ACL_DEVICE",
    )
    assert done.returncode == 0, done.stderr
    assert rules(only_report(tmp_path)) == {"1"}


def test_init_twice_and_finalize_twice_return_their_codes(tmp_path: Path) -> None:
    done = run_snippet(
        """
        import acl
        assert acl.init() == 0
        assert acl.init() == 100002
        assert acl.finalize() == 0
        assert acl.finalize() == 100037
        assert acl.rt.set_device(0) == 100001    # after finalize: a code, never an exception
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr


def test_no_call_raises_whatever_it_is_given(tmp_path: Path) -> None:
    done = run_snippet((
        PRELUDE,
        """
        assert acl.rt.memcpy(None, "x", object(), -1, 9) == 100000
        assert acl.rt.malloc("big", None) == (0, 100000)
        assert acl.mdl.get_num_inputs(12345) == 0
        assert acl.media.dvpp_set_pic_desc_width(0, 16) == 100000
        assert acl.mdl.load_from_file(None)[1] != 0
        """),
        tmp_path,
    )
    assert done.returncode == 0, done.stderr


def test_a_child_forked_after_init_trips_the_fork_rule(tmp_path: Path) -> None:
    # The seeds' hang: a forked child inherits the parent's ACL handles, which mean nothing
    # there. Strict mode makes the child's first call fail and says why; spawn is fine.
    done = run_snippet(
        """
        import multiprocessing as mp, acl
        def child(q):
            q.put(acl.rt.set_device(0))
        if __name__ == "__main__":
            assert acl.init() == 0
            results = {}
            for method in ("fork", "spawn"):
                ctx = mp.get_context(method)
                q = ctx.Queue()
                p = ctx.Process(target=child, args=(q,))
                p.start(); results[method] = q.get(timeout=60); p.join(60)
            print(results)
            assert results["fork"] == 507033, results
            assert results["spawn"] == 100001, results   # fresh process: not initialised yet
            assert acl.finalize() == 0
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    forked = [r for r in reports(tmp_path) if r["forked_child"]]
    assert len(forked) == 1 and rules(forked[0]) == {"2"}, reports(tmp_path)
    assert "spawn" in forked[0]["violations"][0]["message"]


def test_exit_without_finalize_reports_the_leaks(tmp_path: Path) -> None:
    done = run_snippet((PRELUDE, "p, r = acl.rt.malloc(100, 2); ok(r)"), tmp_path)
    assert done.returncode == 0, done.stderr
    report = only_report(tmp_path)
    assert "4" in rules(report)
    kinds = {leak["kind"] for leak in report["leaks"]}
    assert {"rt.malloc", "stream", "context", "set_device"} <= kinds, kinds


def test_strict_finalize_with_live_resources_fails_realistic_records(tmp_path: Path) -> None:
    for mode, code in (("strict", 500001), ("realistic", 0)):
        out = tmp_path / mode
        done = run_snippet((PRELUDE, f"assert acl.finalize() == {code}"), out, mode=mode)
        assert done.returncode == 0, done.stderr
        assert "4" in rules(only_report(out))
