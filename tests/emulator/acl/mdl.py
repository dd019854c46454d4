"""`acl.mdl`: models from emulator `.om` files run with ONNX Runtime (pyacl.md section 3)."""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from acl import _core, _memory, _om
from acl._core import (
    GE_DYNAMIC_BATCH,
    GE_DYNAMIC_INPUT,
    GE_PARAM_INVALID,
    INVALID_MODEL_ID,
    INVALID_PARAM,
    MODEL_INPUT_NOT_MATCH,
    MODEL_NOT_DYNAMIC,
    MODEL_OUTPUT_NOT_MATCH,
    RT_MODEL_CONTEXT,
    STATE,
    AclFail,
    api,
    require_context,
    violation,
)

DYNAMIC_TENSOR_NAME = "ascend_mbatch_shape_data"
FLOAT, FLOAT16, UINT8, INT64 = 0, 1, 4, 9
NCHW, NHWC, ND = 0, 1, 2
DTYPES = {"tensor(float)": (FLOAT, np.float32), "tensor(float16)": (FLOAT16, np.float16)}


@dataclass
class Tensor:
    name: str
    dims: list[int]  # as get_*_dims reports them
    size: int  # bytes for the largest gear
    dtype: int
    fmt: int


@dataclass
class Model:
    model_id: int
    om: _om.OmModel
    session: Any
    ctx: int
    device: int
    onnx_input: str
    image_shape: tuple[int, int, int]  # C, H, W
    onnx_batch: int | None  # fixed batch of the ONNX graph, None if dynamic
    out_shapes: list[tuple[int, ...]]  # per image
    out_dtypes: list[Any]
    inputs: list[Tensor]
    outputs: list[Tensor]
    max_batch: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: int = 0
    unloaded: bool = False
    cur_batch: int = 0


_MODELS: dict[int, Model] = {}
_NEXT_ID = iter(range(1, 1 << 31))


def loaded_on(device: int | None) -> list[int]:
    return [m.model_id for m in _MODELS.values()
            if not m.unloaded and (device is None or m.device == device)]


def _build(om: _om.OmModel, ctx: _core.Context) -> Model:
    import onnxruntime as ort

    if om.soc is not None and om.soc != _core.settings().soc:
        raise _om.OmError(100014, f"model converted for {om.soc}, this device is "
                          f"{_core.settings().soc} (run ATC with --soc_version)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(om.onnx), options, providers=["CPUExecutionProvider"])
    (onnx_in,) = session.get_inputs()
    batch_dim, c, h, w = onnx_in.shape
    onnx_batch = batch_dim if isinstance(batch_dim, int) else None
    if om.gears and onnx_batch not in (None, 1):
        raise _om.OmError(100014, "dynamic batch needs an ONNX graph of batch 1 or dynamic")
    max_batch = max(om.gears) if om.gears else (onnx_batch or 1)
    dtype_code, dtype = DTYPES.get(onnx_in.type, (FLOAT, np.float32))
    batch_shown = -1 if om.gears else max_batch
    if om.aipp is not None:
        if (om.aipp.width, om.aipp.height) != (w, h):
            raise _om.OmError(100014, f"AIPP src_image_size {om.aipp.width}x{om.aipp.height} "
                              f"differs from the network input {w}x{h} (crop not emulated)")
        inputs = [Tensor(onnx_in.name, [batch_shown, h, w, c], max_batch * om.aipp.image_bytes,
                         UINT8, NHWC)]
    else:
        inputs = [Tensor(onnx_in.name, [batch_shown, c, h, w],
                         max_batch * c * h * w * np.dtype(dtype).itemsize, dtype_code, NCHW)]
    if om.gears:
        inputs.append(Tensor(DYNAMIC_TENSOR_NAME, [1], 8, INT64, ND))
    outputs, out_shapes, out_dtypes = [], [], []
    for out in session.get_outputs():
        per_image = tuple(int(d) for d in out.shape[1:])
        code, odt = DTYPES.get(out.type, (FLOAT, np.float32))
        size = max_batch * int(np.prod(per_image)) * np.dtype(odt).itemsize
        outputs.append(Tensor(out.name, [max_batch, *per_image], size, code, ND))
        out_shapes.append(per_image)
        out_dtypes.append(odt)
    return Model(
        model_id=next(_NEXT_ID), om=om, session=session, ctx=ctx.handle, device=ctx.device,
        onnx_input=onnx_in.name, image_shape=(c, h, w), onnx_batch=onnx_batch,
        out_shapes=out_shapes, out_dtypes=out_dtypes, inputs=inputs, outputs=outputs,
        max_batch=max_batch,
    )


def _load(data: bytes, base: Path) -> tuple[int, int]:
    ctx = require_context()
    try:
        with _core.device_time():
            model = _build(_om.parse(data, base), ctx)
    except _om.OmError as exc:
        violation("15", exc.code, str(exc))
        raise AclFail(exc.code) from exc
    _MODELS[model.model_id] = model
    _core.register("model", model_id=model.model_id)
    return model.model_id, 0


@api("pair")
def load_from_file(model_path: str) -> tuple[int, int]:
    path = Path(model_path)
    if not path.is_file():
        violation("15", _core.INVALID_FILE, f"no model file {model_path}")
    return _load(path.read_bytes(), path.parent)


@api("pair")
def load_from_mem(model: int, model_size: int) -> tuple[int, int]:
    span = _memory.resolve(model, "model bytes")
    data = ctypes.string_at(span.address(), model_size)
    return _load(data, Path.cwd())


def _model(model_id: Any) -> Model:
    model = _MODELS.get(model_id) if isinstance(model_id, int) else None
    if model is None or model.unloaded:
        violation("16", INVALID_MODEL_ID, f"model id {model_id!r} is not loaded")
        raise AclFail(INVALID_MODEL_ID)
    return model


def _check_model_context(model: Model) -> None:
    ctx = require_context()
    if ctx.handle != model.ctx:
        violation("9", RT_MODEL_CONTEXT, "model used under a context other than the one that "
                  "loaded it", tolerated=True)


@api("ret")
def unload(model_id: int) -> int:
    model = _model(model_id)
    _check_model_context(model)
    if model.pending:
        violation("20", INVALID_PARAM, "unload with execute_async not yet synchronized")
    model.unloaded = True
    model.session = None
    for resource in list(STATE.resources.values()):
        if resource.kind == "model" and resource.data.get("model_id") == model_id:
            resource.destroyed = True
    return 0


# ------------------------------------------------------------------ descriptions


@api("value")
def create_desc() -> int:
    return _core.register("model_desc", model_id=0).handle


@api("ret")
def get_desc(model_desc: int, model_id: int) -> int:
    resource = _core.lookup(model_desc, "model_desc")
    resource.data["model_id"] = _model(model_id).model_id
    return 0


@api("ret")
def destroy_desc(model_desc: int) -> int:
    _core.destroy(_core.lookup(model_desc, "model_desc"))
    return 0


def _described(desc: int) -> Model:
    model_id = _core.lookup(desc, "model_desc").data.get("model_id", 0)
    model = _MODELS.get(model_id)
    if model is None:
        violation("16", INVALID_PARAM, "model desc not filled by get_desc")
        raise AclFail(INVALID_PARAM)
    return model


def _tensor(tensors: list[Tensor], index: Any) -> Tensor:
    if not isinstance(index, int) or not 0 <= index < len(tensors):
        violation("16", INVALID_PARAM, f"tensor index {index!r} out of range")
    return tensors[index]


def _dims(t: Tensor) -> dict[str, Any]:
    return {"name": t.name, "dimCount": len(t.dims), "dims": list(t.dims)}


@api("value")
def get_num_inputs(model_desc: int) -> int:
    return len(_described(model_desc).inputs)


@api("value")
def get_num_outputs(model_desc: int) -> int:
    return len(_described(model_desc).outputs)


@api("value")
def get_input_size_by_index(model_desc: int, index: int) -> int:
    return _tensor(_described(model_desc).inputs, index).size


@api("value")
def get_output_size_by_index(model_desc: int, index: int) -> int:
    return _tensor(_described(model_desc).outputs, index).size


@api("pair")
def get_input_dims(model_desc: int, index: int) -> tuple[dict[str, Any], int]:
    return _dims(_tensor(_described(model_desc).inputs, index)), 0


@api("pair")
def get_input_dims_v2(model_desc: int, index: int) -> tuple[dict[str, Any], int]:
    model = _described(model_desc)
    t = _tensor(model.inputs, index)
    if index == 0 and model.om.aipp is not None:
        n, h, w, _ = t.dims
        return {"name": t.name, "dimCount": 4, "dims": [n, h * 3 // 2, w, 1]}, 0
    return _dims(t), 0


@api("pair")
def get_output_dims(model_desc: int, index: int) -> tuple[dict[str, Any], int]:
    return _dims(_tensor(_described(model_desc).outputs, index)), 0


@api("pair")
def get_cur_output_dims(model_desc: int, index: int) -> tuple[dict[str, Any], int]:
    model = _described(model_desc)
    t = _tensor(model.outputs, index)
    batch = model.cur_batch or model.max_batch
    return {"name": t.name, "dimCount": len(t.dims), "dims": [batch, *t.dims[1:]]}, 0


@api("value")
def get_input_data_type(model_desc: int, index: int) -> int:
    return _tensor(_described(model_desc).inputs, index).dtype


@api("value")
def get_output_data_type(model_desc: int, index: int) -> int:
    return _tensor(_described(model_desc).outputs, index).dtype


@api("value")
def get_input_format(model_desc: int, index: int) -> int:
    return _tensor(_described(model_desc).inputs, index).fmt


@api("value")
def get_output_format(model_desc: int, index: int) -> int:
    return _tensor(_described(model_desc).outputs, index).fmt


@api("value")
def get_input_name_by_index(model_desc: int, index: int) -> str:
    return _tensor(_described(model_desc).inputs, index).name


@api("value")
def get_output_name_by_index(model_desc: int, index: int) -> str:
    return _tensor(_described(model_desc).outputs, index).name


@api("pair")
def get_input_index_by_name(model_desc: int, name: str) -> tuple[int, int]:
    for i, t in enumerate(_described(model_desc).inputs):
        if t.name == name:
            return i, 0
    _core.set_error(f"no input named {name}")
    return 0, INVALID_PARAM  # acllite's normal "static model" answer: not a violation


@api("pair")
def get_dynamic_batch(model_desc: int) -> tuple[dict[str, Any], int]:
    gears = list(_described(model_desc).om.gears)
    return {"batchCount": len(gears), "batch": gears}, 0


@api("tuple2")
def get_aipp_type(model_id: int, index: int) -> tuple[int, int, int]:
    model = _model(model_id)
    return (1 if index == 0 and model.om.aipp is not None else 0), 0, 0


# ------------------------------------------------------------------ datasets


@api("value")
def create_dataset() -> int:
    return _core.register("dataset", buffers=[], batch=0).handle


@api("pair")
def add_dataset_buffer(dataset: int, data_buffer: int) -> tuple[int, int]:
    resource = _core.lookup(dataset, "dataset")
    _core.lookup(data_buffer, "data_buffer")
    resource.data["buffers"].append(data_buffer)
    resource.data["batch"] = 0  # rule 17: the gear is set again after the dataset changes
    return dataset, 0


@api("value")
def get_dataset_num_buffers(dataset: int) -> int:
    return len(_core.lookup(dataset, "dataset").data["buffers"])


@api("value")
def get_dataset_buffer(dataset: int, index: int) -> int:
    buffers = _core.lookup(dataset, "dataset").data["buffers"]
    return int(buffers[index]) if 0 <= index < len(buffers) else 0


@api("ret")
def destroy_dataset(dataset: int) -> int:
    _core.destroy(_core.lookup(dataset, "dataset"))
    return 0


@api("ret")
def set_dynamic_batch_size(model_id: int, dataset: int, index: int, batch_size: int) -> int:
    model = _model(model_id)
    resource = _core.lookup(dataset, "dataset")
    if not model.om.gears:
        violation("17", MODEL_NOT_DYNAMIC, "set_dynamic_batch_size on a static model")
    if index != len(model.inputs) - 1:
        violation("17", GE_DYNAMIC_INPUT, f"index {index} is not the {DYNAMIC_TENSOR_NAME} input")
    if batch_size not in model.om.gears:
        violation("17", GE_DYNAMIC_BATCH, f"batch {batch_size} is not a gear of the model "
                  f"{list(model.om.gears)}")
    resource.data["batch"] = batch_size
    return 0


# ------------------------------------------------------------------ execute


@dataclass
class _Bound:
    batch: int
    inputs: list[_memory.Span]
    outputs: list[_memory.Span]


def _bind(model: Model, in_ds: int, out_ds: int) -> _Bound:
    ins = _core.lookup(in_ds, "dataset")
    outs = _core.lookup(out_ds, "dataset")
    in_bufs = [_core.lookup(b, "data_buffer") for b in ins.data["buffers"]]
    out_bufs = [_core.lookup(b, "data_buffer") for b in outs.data["buffers"]]
    if len(in_bufs) != len(model.inputs):
        violation("16", MODEL_INPUT_NOT_MATCH, f"{len(in_bufs)} input buffers, the model has "
                  f"{len(model.inputs)} inputs (dynamic input included)")
    if len(out_bufs) != len(model.outputs):
        violation("16", MODEL_OUTPUT_NOT_MATCH, f"{len(out_bufs)} output buffers, the model has "
                  f"{len(model.outputs)} outputs")
    batch = model.max_batch
    if model.om.gears:
        batch = ins.data["batch"]
        if not batch:
            violation("17", GE_DYNAMIC_INPUT, "dynamic-batch model executed without "
                      "set_dynamic_batch_size since the dataset was built")
    spans = []
    for i, (buf, tensor) in enumerate(zip(in_bufs, model.inputs, strict=True)):
        size = buf.data["size"]
        if size > tensor.size:
            violation("16", GE_PARAM_INVALID, f"input {i} buffer is {size} bytes, larger than "
                      f"the model's {tensor.size}")
        if size < tensor.size:
            violation("16", GE_PARAM_INVALID, f"input {i} buffer is {size} bytes, smaller than "
                      f"the model's {tensor.size} (the device would read past it)",
                      tolerated=True)
        span = _device_span(buf.data["addr"], size, f"input {i}")
        if tensor.name == DYNAMIC_TENSOR_NAME and span.block is not None:
            span.block.runtime_filled = True  # rule 17: the runtime writes it, not the user
        spans.append(span)
    out_spans = []
    for i, (buf, tensor) in enumerate(zip(out_bufs, model.outputs, strict=True)):
        if buf.data["size"] < tensor.size:
            violation("16", GE_PARAM_INVALID, f"output {i} buffer is {buf.data['size']} bytes, "
                      f"the model writes {tensor.size}")
        out_spans.append(_device_span(buf.data["addr"], buf.data["size"], f"output {i}"))
    return _Bound(batch, spans, out_spans)


def _device_span(addr: int, size: int, what: str) -> _memory.Span:
    span = _memory.resolve(addr, what)
    if not span.on_device and not (
        span.block is not None and _core.settings().run_mode == _core.ACL_DEVICE
    ):
        violation("16", INVALID_PARAM, f"{what} at {addr:#x} is host memory: the model reads "
                  "device memory (rt.malloc / dvpp_malloc) only")
    if size > span.limit:
        violation("16", INVALID_PARAM, f"{what} buffer of {size} bytes overruns its allocation")
    return span


def _run(model: Model, bound: _Bound) -> None:
    with _core.device_time():
        data = bound.inputs[0].view(model.inputs[0].size).copy()
        c, h, w = model.image_shape
        images = []
        for i in range(bound.batch):
            if model.om.aipp is not None:
                n = model.om.aipp.image_bytes
                images.append(model.om.aipp.apply(data[i * n : (i + 1) * n]))
            else:
                n = c * h * w * 4
                images.append(data[i * n : (i + 1) * n].view(np.float32).reshape(c, h, w))
        batch = np.stack(images).astype(np.float32)
        if model.onnx_batch is None:
            results = model.session.run(None, {model.onnx_input: batch})
        else:
            per_image = [model.session.run(None, {model.onnx_input: batch[i : i + 1]})
                         for i in range(bound.batch)]
            results = [np.concatenate([r[k] for r in per_image]) for k in range(len(per_image[0]))]
        for out, span, dtype in zip(results, bound.outputs, model.out_dtypes, strict=True):
            raw = np.ascontiguousarray(out, dtype=dtype).view(np.uint8).reshape(-1)
            span.view(raw.size)[:] = raw
        model.cur_batch = bound.batch
        with STATE.lock:
            STATE.batches[bound.batch] += 1


@api("ret")
def execute(model_id: int, input_dataset: int, output_dataset: int) -> int:
    model = _model(model_id)
    _check_model_context(model)
    bound = _bind(model, input_dataset, output_dataset)
    if not model.lock.acquire(blocking=False):
        violation("10", INVALID_PARAM, "model executed from two threads at once (one model id "
                  "per thread, or a lock around execute)", tolerated=True)
        _run(model, bound)
        return 0
    try:
        _run(model, bound)
    finally:
        model.lock.release()
    return 0


@api("ret")
def execute_async(model_id: int, input_dataset: int, output_dataset: int, stream: int) -> int:
    from acl import rt

    model = _model(model_id)
    _check_model_context(model)
    bound = _bind(model, input_dataset, output_dataset)
    model.pending += 1

    def work() -> None:
        model.pending -= 1
        if not model.unloaded:
            _run(model, bound)

    rt.enqueue(stream, work)
    return 0
