"""MQTT delivery for the supervisor: `Publisher` (outbox, reconnect, TLS, Home Assistant discovery).

Runs in the supervisor process only; workers never import it. paho-mqtt 2.x is used only inside this
package (its public API, in `client.py`), so a paho upgrade touches this package alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edged.mqtt.publisher import Publisher

__all__ = ["Publisher"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `edged.mqtt.topics` or `payloads` (pure functions) can be imported without
    # paho and the whole publisher.
    if name == "Publisher":
        from edged.mqtt.publisher import Publisher

        return Publisher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
