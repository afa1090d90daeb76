"""bridge.mqtt: the MQTT adapter onto the handlers, the bridge service, sealed batches, MQTT 5.

Real mosquitto (``mosquitto`` fixture, or tests.support.broker.start_test_mosquitto for a
module-wide broker); a bridge on it from tests/support/mqtt.py.
"""
