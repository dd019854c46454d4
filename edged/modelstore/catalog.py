"""The models `edged models fetch NAME` knows: where to get them and the sha256 they must have."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogEntry:
    filename: str
    url: str
    sha256: str
    size: int
    model_format: str
    input_size: tuple[int, int]
    licence: str


CATALOG: dict[str, CatalogEntry] = {
    "yolox-nano": CatalogEntry(
        filename="yolox_nano.onnx",
        url="https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx",
        sha256="695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14",
        size=3_660_092,
        model_format="yolox",
        input_size=(416, 416),
        licence="Apache-2.0 (Megvii YOLOX)",
    ),
}
