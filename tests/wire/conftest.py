"""wire: the node <-> server contract (golden vectors, artifact parser, credentials, decoder errors).

Artifacts are made by the real mender-artifact (file-local, module-scoped fixtures).
"""
