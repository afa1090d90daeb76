"""firmware_proto: the node side, in Python, shaped for a C port.

Sans-I/O cores (bytes and events in, bytes and events out, time passed in as ``now``):

* :mod:`firmware_proto.dtls_client` — DTLS 1.2 client (PSK or ECDSA certificate) on
  python-mbedtls; the node's MQTT-SN session runs inside it, end to end with the gateway.
* :mod:`firmware_proto.relay` — the root-node relay: MQTT-SN forwarder encapsulation around its
  children's DTLS datagrams; it holds no keys. :mod:`firmware_proto.relay_udp` drives it over
  real UDP (``meshota relay``).
* :mod:`firmware_proto.mbedtls_glue` — mbedTLS timers on ``now`` and datagram framing, shared
  with the gateway's DTLS server (``bridge.dtls``).
* :mod:`firmware_proto.dtls_testing` — test PKI and a virtual-time, seeded-loss link.
"""
