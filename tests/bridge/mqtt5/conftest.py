"""bridge.mqtt5: the MQTT 5 client shared by the bridge and the gateway.

Real mosquitto (``mosquitto`` fixture, or tests.support.broker.start_test_mosquitto).
"""
