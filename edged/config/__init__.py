"""Configuration: plain data plus validation; imports nothing that runs.

`load_config(path)` returns a typed, validated `Config` or raises `ConfigError` carrying every
problem found, each with the file, the key path and what was expected.
"""

from edged.config.model import (
    Config,
    HomeAssistantConfig,
    MqttConfig,
    NodeConfig,
    OutboxConfig,
    StreamConfig,
    TlsConfig,
    WorkerConfig,
)
from edged.config.validate import ConfigError, ConfigProblem, load_config, parse_config

__all__ = [
    "Config",
    "ConfigError",
    "ConfigProblem",
    "HomeAssistantConfig",
    "MqttConfig",
    "NodeConfig",
    "OutboxConfig",
    "StreamConfig",
    "TlsConfig",
    "WorkerConfig",
    "load_config",
    "parse_config",
]
