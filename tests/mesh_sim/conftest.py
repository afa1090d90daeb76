"""mesh_sim: determinism (trace hashes), fault outcomes and the building blocks; no fixtures of its own."""
