"""Model output decoders (YOLOX, YOLOv5, YOLOv8), NMS and letterboxing: pure numpy, shared by
every backend. Runs in worker processes only."""
