"""edged: an edge video-analytics daemon (cameras -> object detector -> MQTT)."""

__version__ = "0.1.0"
