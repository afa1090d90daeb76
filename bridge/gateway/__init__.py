"""The MQTT-SN gateway deployable: UDP and DTLS listeners, the DTLS server core, the broker link.

The protocol itself is :class:`mqttsn.Gateway` (sans-I/O); this package only moves datagrams,
runs DTLS in front of it and owns the MQTT connections it asks for.
"""
