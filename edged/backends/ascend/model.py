"""An `.om` model through acl.mdl: descriptions, buffers and datasets made once, exact sizes.

Runs in a worker process, in threads that called `AclRuntime.enter()`. The model's input is one
device buffer per `InputBuffer`, sized exactly as `get_input_size_by_index` says (for a dynamic
batch model: the largest gear); each has its input dataset built once, with the runtime-filled
dynamic-batch buffer when the model has one. Only the gear is set before each execute. The
output buffers and dataset exist once; `execute` holds a lock because one model id must not run
in two threads at once (pyacl.md 3.2).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edged.backends.ascend.runtime import MALLOC_NORMAL_ONLY, AclRuntime
from edged.backends.base import BackendError

DYNAMIC_BATCH_INPUT = "ascend_mbatch_shape_data"
UINT8 = 4
# aclDataType -> numpy, for model outputs.
DTYPES: dict[int, Any] = {
    0: np.float32, 1: np.float16, 2: np.int8, 3: np.int32, 4: np.uint8, 6: np.int16,
    7: np.uint16, 8: np.uint32, 9: np.int64, 10: np.uint64, 11: np.float64, 12: np.bool_,
}


@dataclass
class InputBuffer:
    """One model input in device memory (DVPP memory, so VPC can write into it)."""

    address: int
    size: int
    dataset: int
    data_buffers: list[int]
    # Letterbox geometry whose pad is in place: VPC writes only the picture, the pad stays.
    padded_for: tuple[int, int, int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Output:
    address: int
    size: int
    dims: tuple[int, ...]
    dtype: Any
    data_buffer: int


class OmModel:
    def __init__(self, runtime: AclRuntime, path: str) -> None:
        self._rt = runtime
        self._path = path
        self.model_id = 0
        self._desc = 0
        self._outputs: list[Output] = []
        self._output_dataset = 0
        self._dynamic_index = -1
        self._dynamic_buffer = 0
        self._dynamic_size = 0
        self._inputs: list[InputBuffer] = []
        self._host_outputs: list[np.ndarray] = []
        self._host_pointers: list[int] = []
        self._lock = threading.Lock()
        self.input_size = 0
        self.input_dims: tuple[int, ...] = ()
        self.input_is_image = False
        self.gears: tuple[int, ...] = ()
        self.max_batch = 1

    # ------------------------------------------------------------------ load / unload

    def load(self) -> None:
        rt, acl = self._rt, self._rt.acl
        self.model_id = rt.value("acl.mdl.load_from_file", acl.mdl.load_from_file(self._path))
        self._desc = rt.handle("acl.mdl.create_desc", acl.mdl.create_desc())
        rt.check("acl.mdl.get_desc", acl.mdl.get_desc(self._desc, self.model_id))
        index, ret = acl.mdl.get_input_index_by_name(self._desc, DYNAMIC_BATCH_INPUT)
        self._dynamic_index = index if ret == 0 else -1
        images = acl.mdl.get_num_inputs(self._desc) - (1 if self._dynamic_index >= 0 else 0)
        if images != 1:
            raise BackendError(
                f"{self._path}: the model has {images} image inputs; edged feeds one"
            )
        self.input_size = acl.mdl.get_input_size_by_index(self._desc, 0)
        dims = rt.value("acl.mdl.get_input_dims", acl.mdl.get_input_dims(self._desc, 0))
        self.input_dims = tuple(int(d) for d in dims["dims"])
        # Static AIPP YUV420SP_U8: the input is raw uint8 NV12 (pyacl.md 3.4).
        self.input_is_image = acl.mdl.get_input_data_type(self._desc, 0) == UINT8
        if self._dynamic_index >= 0:
            gears = rt.value("acl.mdl.get_dynamic_batch", acl.mdl.get_dynamic_batch(self._desc))
            self.gears = tuple(sorted(int(g) for g in gears["batch"]))
            self.max_batch = self.gears[-1]
            self._dynamic_size = acl.mdl.get_input_size_by_index(self._desc, self._dynamic_index)
            self._dynamic_buffer = self._malloc(self._dynamic_size)
        else:
            self.max_batch = max(1, self.input_dims[0])
        self._make_outputs()

    def _malloc(self, size: int) -> int:
        acl = self._rt.acl
        return int(self._rt.value("acl.rt.malloc", acl.rt.malloc(size, MALLOC_NORMAL_ONLY)))

    def _make_outputs(self) -> None:
        rt, acl = self._rt, self._rt.acl
        self._output_dataset = rt.handle("acl.mdl.create_dataset", acl.mdl.create_dataset())
        for i in range(acl.mdl.get_num_outputs(self._desc)):
            size = acl.mdl.get_output_size_by_index(self._desc, i)
            dims = rt.value("acl.mdl.get_output_dims", acl.mdl.get_output_dims(self._desc, i))
            dtype = DTYPES.get(acl.mdl.get_output_data_type(self._desc, i))
            if dtype is None:
                raise BackendError(f"{self._path}: output {i} has a data type edged cannot read")
            address = self._malloc(size)
            data_buffer = rt.handle("acl.create_data_buffer", acl.create_data_buffer(address, size))
            self._outputs.append(
                Output(address, size, tuple(int(d) for d in dims["dims"]), dtype, data_buffer)
            )
            rt.value("acl.mdl.add_dataset_buffer",
                     acl.mdl.add_dataset_buffer(self._output_dataset, data_buffer))
            host = np.empty(size, np.uint8)
            self._host_outputs.append(host)
            self._host_pointers.append(int(acl.util.numpy_to_ptr(host)))

    def new_input(self) -> InputBuffer:
        """A model input buffer in DVPP memory with its dataset, built once."""
        rt, acl = self._rt, self._rt.acl
        address = int(rt.value("acl.media.dvpp_malloc", acl.media.dvpp_malloc(self.input_size)))
        buffer = InputBuffer(address, self.input_size, 0, [])
        self._inputs.append(buffer)
        buffer.dataset = rt.handle("acl.mdl.create_dataset", acl.mdl.create_dataset())
        parts = [(address, self.input_size)]
        if self._dynamic_index >= 0:
            parts.append((self._dynamic_buffer, self._dynamic_size))
        for ptr, size in parts:
            data_buffer = rt.handle("acl.create_data_buffer", acl.create_data_buffer(ptr, size))
            buffer.data_buffers.append(data_buffer)
            rt.value("acl.mdl.add_dataset_buffer",
                     acl.mdl.add_dataset_buffer(buffer.dataset, data_buffer))
        return buffer

    # ------------------------------------------------------------------ execute

    def gear_for(self, count: int) -> int:
        if not self.gears:
            return self.max_batch
        for gear in self.gears:
            if gear >= count:
                return gear
        return self.gears[-1]

    def execute(self, buffer: InputBuffer, count: int) -> list[np.ndarray]:
        """Run the model on the first `count` images of `buffer`; one output array per image."""
        rt, acl = self._rt, self._rt.acl
        with self._lock:
            if self._dynamic_index >= 0:
                rt.check(
                    "acl.mdl.set_dynamic_batch_size",
                    acl.mdl.set_dynamic_batch_size(
                        self.model_id, buffer.dataset, self._dynamic_index, self.gear_for(count)
                    ),
                )
            rt.check("acl.mdl.execute",
                     acl.mdl.execute(self.model_id, buffer.dataset, self._output_dataset))
            return self._read_outputs(count)

    def _read_outputs(self, count: int) -> list[np.ndarray]:
        rt, acl = self._rt, self._rt.acl
        per_image: list[list[np.ndarray]] = [[] for _ in range(count)]
        hosts = zip(self._outputs, self._host_outputs, self._host_pointers, strict=True)
        for output, host, pointer in hosts:
            batch = self.max_batch
            image_bytes = output.size // batch
            wanted = image_bytes * count
            # Only the images that were run come back to the host.
            rt.check(
                "acl.rt.memcpy",
                acl.rt.memcpy(pointer, host.nbytes, output.address, wanted, rt.to_host()),
            )
            shape = (1, *output.dims[1:])
            for i in range(count):
                raw = host[i * image_bytes : (i + 1) * image_bytes]
                per_image[i].append(raw.view(output.dtype).reshape(shape).astype(np.float32))
        return [outputs[0] for outputs in per_image]

    def outputs_per_image_bytes(self) -> int:
        return sum(o.size // self.max_batch for o in self._outputs)

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Datasets and data buffers, then memory, then unload and the desc: reverse order."""
        rt, acl = self._rt, self._rt.acl
        for buffer in self._inputs:
            for data_buffer in buffer.data_buffers:
                rt.check("acl.destroy_data_buffer", acl.destroy_data_buffer(data_buffer))
            if buffer.dataset:
                rt.check("acl.mdl.destroy_dataset", acl.mdl.destroy_dataset(buffer.dataset))
            rt.check("acl.media.dvpp_free", acl.media.dvpp_free(buffer.address))
        self._inputs.clear()
        for output in self._outputs:
            rt.check("acl.destroy_data_buffer", acl.destroy_data_buffer(output.data_buffer))
        if self._output_dataset:
            rt.check("acl.mdl.destroy_dataset", acl.mdl.destroy_dataset(self._output_dataset))
            self._output_dataset = 0
        for output in self._outputs:
            rt.check("acl.rt.free", acl.rt.free(output.address))
        self._outputs.clear()
        if self._dynamic_buffer:
            rt.check("acl.rt.free", acl.rt.free(self._dynamic_buffer))
            self._dynamic_buffer = 0
        if self.model_id:
            rt.check("acl.mdl.unload", acl.mdl.unload(self.model_id))
            self.model_id = 0
        if self._desc:
            rt.check("acl.mdl.destroy_desc", acl.mdl.destroy_desc(self._desc))
            self._desc = 0
