"""mqttsn: the sans-I/O codec, client and gateway, on hand-built packets and virtual time (no sockets)."""
