"""acl.mdl on the emulator: .om loading, exact input sizes, dynamic batch, static AIPP."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.acl_emulator import (
    PRELUDE,
    TEARDOWN,
    YOLOX_AIPP,
    only_report,
    rules,
    run_snippet,
    write_om,
)

# Loads the model named by OM and builds an output dataset; `run(size, batch)` executes with an
# input buffer of `size` bytes and returns the execute code.
MODEL = """
OM = {om!r}
mid, r = acl.mdl.load_from_file(OM); ok(r)
desc = acl.mdl.create_desc(); ok(acl.mdl.get_desc(desc, mid))
in_size = acl.mdl.get_input_size_by_index(desc, 0)
out_size = acl.mdl.get_output_size_by_index(desc, 0)
out, r = acl.rt.malloc(out_size, 2); ok(r)
out_ds = acl.mdl.create_dataset()
out_buf = acl.create_data_buffer(out, out_size)
ok(acl.mdl.add_dataset_buffer(out_ds, out_buf)[1])
dyn_index, r = acl.mdl.get_input_index_by_name(desc, "ascend_mbatch_shape_data")
dynamic = r == 0
if dynamic:
    dyn_size = acl.mdl.get_input_size_by_index(desc, dyn_index)
    dyn, r = acl.rt.malloc(dyn_size, 2); ok(r)

def run(size, batch=None, set_batch=True):
    inp, r = acl.rt.malloc(size, 2); ok(r)
    ds = acl.mdl.create_dataset()
    bufs = [acl.create_data_buffer(inp, size)]
    if dynamic:
        bufs.append(acl.create_data_buffer(dyn, dyn_size))
    for b in bufs:
        ok(acl.mdl.add_dataset_buffer(ds, b)[1])
    code = 0
    if dynamic and set_batch:
        code = acl.mdl.set_dynamic_batch_size(mid, ds, dyn_index, batch)
    if code == 0:
        code = acl.mdl.execute(mid, ds, out_ds)
    for b in bufs:
        ok(acl.destroy_data_buffer(b))
    ok(acl.mdl.destroy_dataset(ds))
    ok(acl.rt.free(inp))
    return code

def unload():
    ok(acl.destroy_data_buffer(out_buf)); ok(acl.mdl.destroy_dataset(out_ds)); ok(acl.rt.free(out))
    if dynamic:
        ok(acl.rt.free(dyn))
    ok(acl.mdl.unload(mid)); ok(acl.mdl.destroy_desc(desc))
"""


@pytest.mark.parametrize(("mode", "smaller_code"), [("strict", 145000), ("realistic", 0)])
def test_an_input_buffer_of_the_wrong_size_is_caught(
    tmp_path: Path, om: Path, mode: str, smaller_code: int
) -> None:
    done = run_snippet((
        PRELUDE,
        MODEL.format(om=str(om)),
        f"""
        assert in_size == 4 * 416 * 416 * 3 // 2, in_size   # NV12 for the largest gear
        assert run(in_size, 1) == 0
        assert run(in_size + 64, 1) == 145000        # larger: GraphEngine refuses it anyway
        assert run(in_size - 64, 1) == {smaller_code}   # smaller: reads past the buffer
        unload()
        """,
        TEARDOWN,
    ), tmp_path / "r", mode=mode)
    assert done.returncode == 0, done.stderr
    report = only_report(tmp_path / "r")
    assert report["violation_counts"] == {"16": 2}
    assert report["device_cpu_s"] > 0


def test_dynamic_batch_needs_a_gear_set_after_the_dataset_is_built(
    tmp_path: Path, om: Path
) -> None:
    done = run_snippet((
        PRELUDE,
        MODEL.format(om=str(om)),
        """
        assert acl.mdl.get_dynamic_batch(desc) == ({"batchCount": 3, "batch": [1, 2, 4]}, 0)
        assert run(in_size, set_batch=False) == 145011
        assert run(in_size, 3) == 145013
        assert run(in_size, 4) == 0
        assert acl.mdl.get_cur_output_dims(desc, 0)[0]["dims"] == [4, 3549, 85]
        unload()
        """,
        TEARDOWN,
    ), tmp_path / "r")
    assert done.returncode == 0, done.stderr
    assert rules(only_report(tmp_path / "r")) == {"17"}


@pytest.mark.parametrize("mode", ["strict", "realistic"])
def test_finalize_before_unload_is_caught(tmp_path: Path, om: Path, mode: str) -> None:
    done = run_snippet((
        PRELUDE,
        MODEL.format(om=str(om)),
        f"""
        assert run(in_size, 1) == 0
        assert acl.finalize() == {500001 if mode == "strict" else 0}
        """,
    ), tmp_path / "r", mode=mode)
    assert done.returncode == 0, done.stderr
    report = only_report(tmp_path / "r")
    assert {"4", "20"} <= rules(report)
    assert {"model", "model_desc", "rt.malloc"} <= {leak["kind"] for leak in report["leaks"]}


def test_an_om_for_another_soc_or_a_missing_file_does_not_load(
    tmp_path: Path, model_path: Path
) -> None:
    other = write_om(tmp_path / "p3.om", model_path, soc="Ascend310P3")
    done = run_snippet((
        PRELUDE,
        f"""
        assert acl.mdl.load_from_file({str(other)!r}) == (0, 100014)
        assert acl.mdl.load_from_file("/nonexistent.om") == (0, 100003)
        """,
        TEARDOWN,
    ), tmp_path / "r")
    assert done.returncode == 0, done.stderr


def test_static_aipp_turns_nv12_into_the_bgr_the_network_wants(
    tmp_path: Path, model_path: Path
) -> None:
    # Compare AIPP's integer CSC with OpenCV's BT.601 conversion of the same NV12 bytes:
    # a swapped matrix row (RGB for BGR) or NV21 for NV12 would be off by far more.
    done = run_snippet(
        f"""
        import sys, cv2, numpy as np
        from acl import _om
        aipp = _om.Aipp.parse({YOLOX_AIPP!r})
        rng = np.random.default_rng(1)
        bgr = cv2.resize(rng.integers(0, 255, (52, 52, 3), dtype=np.uint8), (416, 416))
        i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
        y, u, v = i420[:416], i420[416:520].reshape(208, 208), i420[520:].reshape(208, 208)
        nv12 = np.concatenate([y.ravel(), np.stack([u, v], -1).ravel()])
        chw = aipp.apply(nv12)
        want = cv2.cvtColor(nv12.reshape(624, 416), cv2.COLOR_YUV2BGR_NV12)
        diff = np.abs(chw.transpose(1, 2, 0) - want.astype(np.float32))
        print(diff.mean(), diff.max())
        assert diff.mean() < 1.5 and diff.max() <= 4, (diff.mean(), diff.max())
        swapped = _om.Aipp.parse(dict({YOLOX_AIPP!r}, rbuv_swap_switch=True)).apply(nv12)
        assert np.abs(swapped.transpose(1, 2, 0) - want).mean() > 10
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
