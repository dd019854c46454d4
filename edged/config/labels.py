"""Class names: the built-in COCO list, or a labels file with one name a line, in output order.

Plain data, read by both processes: config validation and the supervisor (which labels a stream
may publish, Home Assistant sensors) and the worker's detector. It lives with the config, not in
`edged.detect`, because the supervisor never imports the worker's packages.
"""

from __future__ import annotations

from pathlib import Path

# The 80 COCO classes in the order YOLOX, YOLOv5 and YOLOv8 COCO models emit them.
COCO: tuple[str, ...] = (
    'person',
    'bicycle',
    'car',
    'motorbike',
    'aeroplane',
    'bus',
    'train',
    'truck',
    'boat',
    'traffic light',
    'fire hydrant',
    'stop sign',
    'parking meter',
    'bench',
    'bird',
    'cat',
    'dog',
    'horse',
    'sheep',
    'cow',
    'elephant',
    'bear',
    'zebra',
    'giraffe',
    'backpack',
    'umbrella',
    'handbag',
    'tie',
    'suitcase',
    'frisbee',
    'skis',
    'snowboard',
    'sports ball',
    'kite',
    'baseball bat',
    'baseball glove',
    'skateboard',
    'surfboard',
    'tennis racket',
    'bottle',
    'wine glass',
    'cup',
    'fork',
    'knife',
    'spoon',
    'bowl',
    'banana',
    'apple',
    'sandwich',
    'orange',
    'broccoli',
    'carrot',
    'hot dog',
    'pizza',
    'donut',
    'cake',
    'chair',
    'sofa',
    'pottedplant',
    'bed',
    'diningtable',
    'toilet',
    'tvmonitor',
    'laptop',
    'mouse',
    'remote',
    'keyboard',
    'cell phone',
    'microwave',
    'oven',
    'toaster',
    'sink',
    'refrigerator',
    'book',
    'clock',
    'vase',
    'scissors',
    'teddy bear',
    'hair drier',
    'toothbrush',
)


def load_labels(spec: str) -> tuple[str, ...]:
    """`"coco"` or a path to a labels file; raises OSError / ValueError on a bad file."""
    if spec == "coco":
        return COCO
    names = tuple(line.strip() for line in Path(spec).read_text(encoding="utf-8").splitlines())
    names = tuple(n for n in names if n)
    if not names:
        raise ValueError(f"{spec} holds no class names")
    return names
