"""``meshota demo --live``: a real OTA over real sockets on loopback (the run: meshota/live/run.py).

``stack`` the server side behind one small interface, ``children`` its child processes,
``operator`` the management API over HTTP, ``fleet`` the root and the nodes (own sockets, file
flash), ``run`` the orchestration and the summary.
"""
