"""Server side of meshota: MQTT-SN gateway drivers, MQTT bridge, API handlers, store, artifacts."""
