"""MQTT delivery for the supervisor: `Publisher` (outbox, reconnect, TLS, Home Assistant discovery).

Runs in the supervisor process only; workers never import it. aiomqtt 2.x is used only inside this
package, so moving to aiomqtt 3 touches this package alone.
"""

from edged.mqtt.publisher import Publisher

__all__ = ["Publisher"]
