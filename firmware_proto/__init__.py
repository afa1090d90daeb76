"""firmware_proto: the node side, in Python, shaped for a C port.

Three rooms, one rule each:

* the package itself — sans-I/O cores (bytes and events in, bytes and events out, time passed in
  as ``now``): :mod:`~firmware_proto.update_agent`, :mod:`~firmware_proto.chunk_receiver`,
  :mod:`~firmware_proto.boot`, :mod:`~firmware_proto.flash_store`,
  :mod:`~firmware_proto.group_stream`, :mod:`~firmware_proto.group_forwarder`,
  :mod:`~firmware_proto.group_link`, :mod:`~firmware_proto.counting` (weekly counts, a root's tally),
  :mod:`~firmware_proto.relay` (the blind root relay: it holds
  no keys), :mod:`~firmware_proto.sealed_uplink`, :mod:`~firmware_proto.dtls_client` and the
  transport-neutral :mod:`~firmware_proto.device_api` protocol;
* :mod:`firmware_proto.aio` — asyncio drivers of those cores over real sockets (UDP MQTT-SN
  client, DTLS node, relay, group link over multicast, runners, HTTP and MQTT-SN device sessions);
* :mod:`firmware_proto.testing` — helpers shipped for tests and the simulator (like
  ``trio.testing``): test PKI and virtual-time links, in-memory group harnesses.

What a node and the server both speak (envelopes, sealed records, chunk maps, frames, artifact
verification, DTLS glue) lives in :mod:`wire`, which imports nothing else of ours.
"""
