"""The same YOLOX-nano network re-exported in YOLOv5 and YOLOv8 output layouts.

No YOLOv5/YOLOv8 model ships with the assets, so the tests build them: nodes appended to
yolox_nano.onnx decode its grid-relative output into the other layouts, following the models
README (centre = (x + grid) * stride, size = exp(w) * stride) independently of edged's decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edged.detect.decoders import Detections

INPUT = (416, 416)

Detect = Callable[[np.ndarray, float], Detections]


def _grid_and_strides() -> tuple[np.ndarray, np.ndarray]:
    cells = [
        (x, y, s) for s in (8, 16, 32) for y in range(INPUT[1] // s) for x in range(INPUT[0] // s)
    ]
    grid = np.array([[c[0], c[1]] for c in cells], np.float32)[None]
    strides = np.array([[c[2]] for c in cells], np.float32)[None]
    return grid, strides


def relayout(model_path: Path, layout: str) -> bytes:
    model = onnx.load(str(model_path))
    graph = model.graph
    raw = graph.output[0].name
    grid, strides = _grid_and_strides()

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def cols(start: int, end: int, name: str) -> str:
        ints = {"starts": start, "ends": end, "axes": 2}
        args = [const(f"{name}_{k}", np.array([v], np.int64)) for k, v in ints.items()]
        graph.node.append(helper.make_node("Slice", [raw, *args], [name]))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        graph.node.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    g, s = const("t_grid", grid), const("t_stride", strides)
    cxcy = node("Mul", [node("Add", [cols(0, 2, "t_xy"), g], "t_xyg"), s], "t_cxcy")
    wh = node("Mul", [node("Exp", [cols(2, 4, "t_wh")], "t_ewh"), s], "t_whpx")
    if layout == "yolov5":
        out = node("Concat", [cxcy, wh, cols(4, 85, "t_objcls")], "output_v5", axis=2)
        dims = [1, grid.shape[1], 85]
    else:
        scores = node("Mul", [cols(4, 5, "t_obj"), cols(5, 85, "t_cls")], "t_scores")
        rows = node("Concat", [cxcy, wh, scores], "t_rows", axis=2)
        out = node("Transpose", [rows], "output_v8", perm=[0, 2, 1])
        dims = [1, 84, grid.shape[1]]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, dims))
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def load_image(assets: Path, name: str) -> np.ndarray:
    frame = cv2.imread(str(assets / "media" / "coco" / f"{name}.jpg"))
    assert frame is not None, name
    return frame
