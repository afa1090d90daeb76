"""Server side of meshota, one room per deployable part.

``gateway/`` is the MQTT-SN gateway (UDP and DTLS listeners, broker link); the device-management
server is ``api/`` (transport-free handlers), ``http/`` and ``mqtt/`` (adapters onto them),
``store/`` (the only writer to the database) and ``artifacts/`` (the blob store).
"""
