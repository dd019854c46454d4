"""The emulator's `.om` format: a small JSON file standing for an ATC-converted model.

    {
      "edged_acl_emulator_om": 1,
      "onnx": "yolox_nano.onnx",          # relative to the .om file (or absolute)
      "soc_version": "Ascend310",         # optional: ATC --soc_version; another SoC fails to load
      "dynamic_batch_size": [1, 2, 4],    # optional: ATC --dynamic_batch_size "1,2,4"
      "aipp": {                           # optional: the aipp.cfg of ATC --insert_op_conf
        "aipp_mode": "static", "input_format": "YUV420SP_U8",
        "src_image_size_w": 416, "src_image_size_h": 416,
        "csc_switch": true, "rbuv_swap_switch": false,
        "matrix_r0c0": 298, ..., "input_bias_0": 16, ...,   # default: BT.601 narrow -> RGB
        "mean_chn_0": 0, "min_chn_0": 0.0, "var_reci_chn_0": 1.0, ...
      }
    }

The model then runs with ONNX Runtime; a static-AIPP input takes NV12 (or NV21) bytes, converted
exactly as the AI Core would (integer CSC, then normalisation) before the ONNX graph sees them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = "edged_acl_emulator_om"
# 9a.11: ATC's default when csc_switch is on and no matrix is given: BT.601 narrow YUV -> RGB.
DEFAULT_MATRIX = ((298, 0, 409), (298, -100, -208), (298, 516, 0))
DEFAULT_INPUT_BIAS = (16, 128, 128)


class OmError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Aipp:
    width: int
    height: int
    csc: bool
    swap_uv: bool
    matrix: tuple[tuple[int, int, int], ...]
    input_bias: tuple[int, int, int]
    mean: tuple[float, float, float]
    minimum: tuple[float, float, float]
    var_reci: tuple[float, float, float]

    @staticmethod
    def parse(cfg: dict[str, Any]) -> Aipp:
        if cfg.get("aipp_mode", "static") != "static":
            raise OmError(100014, "only static AIPP is emulated")
        if cfg.get("input_format") != "YUV420SP_U8":
            raise OmError(100014, f"AIPP input_format {cfg.get('input_format')!r} not emulated")
        has_matrix = any(k.startswith("matrix_") for k in cfg)
        matrix = tuple(
            tuple(int(cfg.get(f"matrix_r{r}c{c}", DEFAULT_MATRIX[r][c])) for c in range(3))
            for r in range(3)
        )
        bias = tuple(
            int(cfg.get(f"input_bias_{i}", DEFAULT_INPUT_BIAS[i] if not has_matrix else 0))
            for i in range(3)
        )
        return Aipp(
            width=int(cfg["src_image_size_w"]),
            height=int(cfg["src_image_size_h"]),
            csc=bool(cfg.get("csc_switch", False)),
            swap_uv=bool(cfg.get("rbuv_swap_switch", False)),
            matrix=matrix,  # type: ignore[arg-type]
            input_bias=bias,  # type: ignore[arg-type]
            mean=tuple(float(cfg.get(f"mean_chn_{i}", 0)) for i in range(3)),  # type: ignore[arg-type]
            minimum=tuple(float(cfg.get(f"min_chn_{i}", 0.0)) for i in range(3)),  # type: ignore[arg-type]
            var_reci=tuple(float(cfg.get(f"var_reci_chn_{i}", 1.0)) for i in range(3)),  # type: ignore[arg-type]
        )

    @property
    def image_bytes(self) -> int:
        return self.width * self.height * 3 // 2

    def apply(self, nv12: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """One image's NV12 bytes -> float32 CHW, as AIPP hands it to the network."""
        w, h = self.width, self.height
        y = nv12[: w * h].reshape(h, w).astype(np.int32)
        uv = nv12[w * h : w * h * 3 // 2].reshape(h // 2, w // 2, 2).astype(np.int32)
        uv = uv.repeat(2, axis=0).repeat(2, axis=1)  # chroma upsampled to 4:4:4
        u, v = (uv[..., 1], uv[..., 0]) if self.swap_uv else (uv[..., 0], uv[..., 1])
        channels = [y, u, v]
        if self.csc:
            centred = [c - b for c, b in zip(channels, self.input_bias, strict=True)]
            channels = [
                np.clip((row[0] * centred[0] + row[1] * centred[1] + row[2] * centred[2]) >> 8,
                        0, 255)
                for row in self.matrix
            ]
        return np.stack(
            [
                (c.astype(np.float32) - m - mn) * vr
                for c, m, mn, vr in zip(channels, self.mean, self.minimum, self.var_reci,
                                        strict=True)
            ]
        )


@dataclass(frozen=True)
class OmModel:
    onnx: Path
    soc: str | None
    gears: tuple[int, ...]
    aipp: Aipp | None


def parse(data: bytes, base: Path) -> OmModel:
    try:
        spec = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OmError(100014, f"not an emulator .om file (JSON expected): {exc}") from exc
    if not isinstance(spec, dict) or spec.get(MAGIC) != 1:
        raise OmError(100014, f"not an emulator .om file (no \"{MAGIC}\": 1)")
    onnx = Path(spec["onnx"])
    if not onnx.is_absolute():
        onnx = base / onnx
    if not onnx.is_file():
        raise OmError(100003, f"the .om names {onnx}, which does not exist")
    gears = tuple(int(g) for g in spec.get("dynamic_batch_size", ()))
    if gears and (sorted(set(gears)) != list(gears) or gears[0] < 1):
        raise OmError(100014, f"dynamic_batch_size {gears} must be increasing positive gears")
    aipp = Aipp.parse(spec["aipp"]) if "aipp" in spec else None
    return OmModel(onnx, spec.get("soc_version"), gears, aipp)
