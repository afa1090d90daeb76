"""meshota: over-the-air updates for microcontroller fleets in meshes (command line entry)."""

__version__ = "0.1.0"
