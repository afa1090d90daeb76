"""Root election and the routing tree of each sub-mesh.

Every node runs the same firmware; the root of a sub-mesh is the live node with the best uplink
score (closest to the sub-mesh's uplink point, as ESP-WIFI-MESH picks the node with the strongest
router signal; ties by lowest id). Each other node joins the tree through the neighbour one layer
closer to the root with the lowest link loss. When a root dies, the survivors of its sub-mesh elect
again after a healing delay; a sub-mesh cut in pieces gets one root per piece.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from .topology import Topology

__all__ = ["MeshTree", "elect"]


@dataclass
class MeshTree:
    """Routing trees of all sub-meshes: ``parent[i]`` is -1 for a root and for a node cut off."""

    roots: list[int]
    parent: list[int]
    depth: list[int]
    children: list[list[int]]
    order: list[int] = field(default_factory=list)  # breadth-first, roots first
    root_of: list[int] = field(default_factory=list)

    def path_to_root(self, node: int) -> list[int]:
        path = [node]
        while self.parent[path[-1]] >= 0:
            path.append(self.parent[path[-1]])
        return path

    def forwarders(self) -> list[int]:
        """Nodes that transmit the stream: every root, and every node with a child."""
        return [i for i in self.order if self.parent[i] < 0 or self.children[i]]

    def subtree(self, node: int) -> list[int]:
        out, stack = [], [node]
        while stack:
            u = stack.pop()
            out.append(u)
            stack.extend(self.children[u])
        return out


def _anchor(topo: Topology, members: list[int]) -> tuple[float, float]:
    return topo.positions[min(members)]


def elect(
    topo: Topology, alive: list[bool], anchors: dict[int, tuple[float, float]] | None = None
) -> MeshTree:
    """Elect a root per connected live piece of every sub-mesh and build its tree."""
    n = topo.n
    parent = [-1] * n
    depth = [-1] * n
    children: list[list[int]] = [[] for _ in range(n)]
    order: list[int] = []
    roots: list[int] = []
    root_of = [-1] * n
    by_mesh: dict[int, list[int]] = {}
    for i in range(n):
        by_mesh.setdefault(topo.submesh[i], []).append(i)
    if anchors is None:
        anchors = {m: _anchor(topo, members) for m, members in by_mesh.items()}
    for mesh in sorted(by_mesh):
        members = [i for i in by_mesh[mesh] if alive[i]]
        anchor = anchors.get(mesh, _anchor(topo, by_mesh[mesh]))
        ranked = sorted(members, key=lambda i: (math.dist(topo.positions[i], anchor), i))
        for cand in ranked:
            if depth[cand] >= 0:
                continue
            roots.append(cand)
            depth[cand] = 0
            root_of[cand] = cand
            layer_start = len(order)
            order.append(cand)
            queue = deque([cand])
            while queue:
                u = queue.popleft()
                for v, _ in topo.adjacency[u]:
                    if depth[v] < 0 and alive[v] and topo.submesh[v] == mesh:
                        depth[v] = depth[u] + 1
                        root_of[v] = cand
                        order.append(v)
                        queue.append(v)
            for v in order[layer_start + 1 :]:
                best = min(
                    (
                        (loss, u)
                        for u, loss in topo.adjacency[v]
                        if root_of[u] == cand and depth[u] == depth[v] - 1 and alive[u]
                    ),
                )
                parent[v] = best[1]
                children[best[1]].append(v)
    return MeshTree(roots, parent, depth, children, order, root_of)
