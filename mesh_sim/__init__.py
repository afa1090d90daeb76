"""mesh_sim: a deterministic discrete-event simulator of a mesh of nodes running the PRODUCT's code.

``meshota sim SCENARIO.toml`` (:mod:`meshota.cli.sim`) runs one scenario file (``scenarios/``,
:mod:`mesh_sim.scenario`): a topology (:mod:`mesh_sim.topology`) and radio model
(:mod:`mesh_sim.radio`) on an event clock with a trace hash (:mod:`mesh_sim.clock`), root
election (:mod:`mesh_sim.election`), the control plane on the real MQTT-SN objects
(:mod:`mesh_sim.control`), the group stream on the real firmware_proto cores and their routing
rules (:mod:`mesh_sim.group`, tuned by :mod:`mesh_sim.params`, malicious roots in
:mod:`mesh_sim.faults`, flash shared between nodes in :mod:`mesh_sim.flash`), optionally the
real server handlers in-process (:mod:`mesh_sim.server`), then the baselines on the same mesh
(:mod:`mesh_sim.baselines`). :func:`mesh_sim.runner.run_scenario` ties these together and returns a
:class:`mesh_sim.result.RunResult`; :mod:`mesh_sim.metrics`, :mod:`mesh_sim.report` and
:mod:`mesh_sim.plots` report it.
Only the radio, the clock and the in-memory broker are models; the protocol objects are the
product's own.
"""
