"""firmware_proto: placeholder package; filled by later issues."""
