"""mesh_sim: placeholder package; filled by later issues."""
