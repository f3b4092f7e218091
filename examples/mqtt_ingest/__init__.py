"""An MQTT ingester: ``app`` hands every message of a broker to a collector
queue, ``connection`` keeps its links to the broker, ``collectors`` says
what is done with each message."""
