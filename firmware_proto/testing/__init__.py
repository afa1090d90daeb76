"""Testing helpers shipped with the node side (like ``trio.testing``): PKI, virtual-time links, harnesses."""
