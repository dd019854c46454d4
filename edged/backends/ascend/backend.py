"""The Ascend backend: pyACL on one NPU device (`backend = "ascend"`, `device = N`).

Runs in a worker process started with `spawn`; `load` creates the ACL runtime there (init,
set_device, create_context) and loads the `.om`. Two input kinds, told by the model itself:
- static AIPP `YUV420SP_U8` (uint8 input): streams decode on VDEC and letterbox on VPC straight
  into the model's input buffer (`AscendMediaPath`); AIPP converts NV12 to the network's colours;
- float input (a model without AIPP): streams decode and letterbox on the host like the CPU
  backend, and the tensor is copied to the device.
Several model inputs given to `infer` at once run as one batch when the model has dynamic batch
gears (the other inputs are copied device-to-device behind the first). Any AclError during
`load` is a boot error (the worker exits with EXIT_BOOT_ERROR and is backed off); during `infer`
it fails that frame. `close` releases everything in the reverse order of `load`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edged.backends.ascend.media import AscendMediaPath, InputPool
from edged.backends.ascend.model import InputBuffer, OmModel
from edged.backends.ascend.runtime import AclRuntime
from edged.backends.ascend.vdec import ChannelIds
from edged.backends.base import BackendError, MediaPath, ModelInput

if TYPE_CHECKING:
    import av

    from edged.config.model import StreamConfig, WorkerConfig


class AscendBackend:
    name = "ascend"

    def __init__(self, worker: WorkerConfig) -> None:
        self._worker = worker
        self._rt: AclRuntime | None = None
        self._model: OmModel | None = None
        self._pool: InputPool | None = None
        self._ids: ChannelIds | None = None
        self._paths: list[AscendMediaPath] = []
        self._paths_lock = threading.Lock()
        self._staging: dict[int, tuple[np.ndarray, int]] = {}
        self.providers: tuple[str, ...] = ()

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        runtime = AclRuntime(self._worker.device)
        self._rt = runtime
        try:
            runtime.open()
            model = OmModel(runtime, self._worker.model)
            self._model = model
            model.load()
            self._check_geometry(model)
        except BaseException:
            self.close()
            raise
        self._pool = InputPool(model)
        self._ids = ChannelIds(runtime.soc)
        mode = "ACL_HOST" if runtime.run_mode else "ACL_DEVICE"
        self.providers = (f"{runtime.soc or 'Ascend'}:{self._worker.device}", mode)

    def _check_geometry(self, model: OmModel) -> None:
        worker = self._worker
        kind = "yuv420sp" if model.input_is_image else "float"
        if worker.input_kind != kind:
            raise BackendError(
                f"{worker.model}: the model takes {kind} input (input_kind = \"{kind}\"), the "
                f"config says input_kind = \"{worker.input_kind}\""
            )
        if worker.batch > model.max_batch:
            gears = list(model.gears) or [model.max_batch]
            raise BackendError(
                f"{worker.model}: batch = {worker.batch} but the model's batch gears are "
                f"{gears} (atc --dynamic_batch_size)"
            )
        width, height = worker.input_size
        if model.input_is_image:
            want = model.max_batch * width * height * 3 // 2
            what = f"static-AIPP NV12 {width}x{height}"
        else:
            want = model.max_batch * 3 * width * height * 4
            what = f"float32 [N, 3, {height}, {width}]"
        if model.input_size != want:
            raise BackendError(
                f"{self._worker.model}: model input is {model.input_size} bytes "
                f"(dims {list(model.input_dims)}); input_size [{width}, {height}] with batch "
                f"{model.max_batch} as {what} would be {want}"
            )

    def warm_up(self) -> None:
        runtime, pool, model = self._ready()
        runtime.enter()
        buffer = pool.take()
        try:
            runtime.check("acl.rt.memset", runtime.acl.rt.memset(
                buffer.address, buffer.size, 114 if model.input_is_image else 0, buffer.size
            ))
            buffer.padded_for = None
            model.execute(buffer, 1)
        finally:
            pool.give(buffer)

    def _ready(self) -> tuple[AclRuntime, InputPool, OmModel]:
        if self._rt is None or self._pool is None or self._model is None:
            raise BackendError("the Ascend backend is not loaded")
        return self._rt, self._pool, self._model

    def media_path(
        self, stream: av.video.stream.VideoStream, config: StreamConfig
    ) -> MediaPath[Any]:
        runtime, pool, model = self._ready()
        if not model.input_is_image:
            from edged.backends.host_media import HostMediaPath

            threads = config.decoder_threads  # "auto" is resolved when the config loads
            return HostMediaPath(stream, self._worker.input_size,
                                 threads if isinstance(threads, int) else 0)
        assert self._ids is not None
        path = AscendMediaPath(runtime, stream, pool, self._ids, self._worker.input_size)
        with self._paths_lock:
            self._paths = [p for p in self._paths if not p.closed] + [path]
        return path

    # ------------------------------------------------------------------ inference

    def infer(self, inputs: Sequence[ModelInput]) -> list[np.ndarray]:
        runtime, pool, model = self._ready()
        runtime.enter()
        outputs: list[np.ndarray] = []
        for start in range(0, len(inputs), model.max_batch):
            outputs.extend(self._run(runtime, pool, model, inputs[start : start + model.max_batch]))
        return outputs

    def _run(self, runtime: AclRuntime, pool: InputPool, model: OmModel,
             batch: Sequence[ModelInput]) -> list[np.ndarray]:
        acl = runtime.acl
        image = model.input_size // model.max_batch
        first = batch[0].data
        staged = not isinstance(first, InputBuffer)
        target = pool.take() if staged else first
        try:
            for slot, item in enumerate(batch):
                if isinstance(item.data, InputBuffer):
                    if item.data is not target:
                        # Device to device: the frame never leaves the NPU.
                        runtime.check("acl.rt.memcpy", acl.rt.memcpy(
                            target.address + slot * image, image, item.data.address, image,
                            3,
                        ))
                else:
                    self._copy_host(runtime, target.address + slot * image, image, item.data)
            return model.execute(target, len(batch))
        finally:
            if staged:
                pool.give(target)

    def _copy_host(self, runtime: AclRuntime, address: int, size: int, tensor: Any) -> None:
        array = np.ascontiguousarray(tensor, dtype=np.float32)
        if array.nbytes != size:
            raise ValueError(f"host tensor of {array.nbytes} bytes for a {size}-byte input")
        acl = runtime.acl
        # A buffer registered once per thread: numpy_to_ptr on every frame would copy nothing
        # but cost a call; the host tensor is copied into it, then to the device.
        key = threading.get_ident()
        staging = self._staging.get(key)
        if staging is None or staging[0].nbytes != size:
            host = np.empty(size // 4, np.float32)
            staging = (host, int(acl.util.numpy_to_ptr(host)))
            self._staging[key] = staging
        np.copyto(staging[0], array.reshape(-1))
        runtime.check("acl.rt.memcpy",
                      acl.rt.memcpy(address, size, staging[1], size, runtime.to_device()))

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Streams' paths still open, then the model, then the runtime: reverse order."""
        runtime = self._rt
        if runtime is None:
            return
        runtime.enter()
        with self._paths_lock:
            paths, self._paths = self._paths, []
        try:
            for path in paths:
                path.close()
        finally:
            try:
                if self._model is not None:
                    self._model.close()
            finally:
                self._model = None
                self._pool = None
                self._rt = None
                runtime.close()
