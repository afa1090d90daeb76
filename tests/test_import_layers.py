"""The layering of the tree, read from the source with ``ast`` (nothing is imported).

Every import counts: module level, inside functions (lazy) and under ``TYPE_CHECKING``. The rules:

* no cycle between top-level packages, and none between subpackages (a package's own modules
  are one unit, each subpackage another: ``bridge.api``, ``firmware_proto``, ``firmware_proto.aio``;
  a ``__main__`` module, which nothing imports, is a unit of its own);
* ``wire`` imports nothing else of ours;
* no upward import: ``wire``, ``mqttsn`` < ``bridge``, ``firmware_proto`` < ``mesh_sim`` <
  ``meshota``; packages on one level do not import each other (``bridge`` and ``firmware_proto``
  never do);
* ``bridge.api`` (the handlers) imports no transport: not ``bridge.http``, ``bridge.mqtt``,
  ``bridge.gateway``, uvicorn, aiomqtt or paho;
* no module is over 650 lines (:data:`LONG_OK` lists those another helper is splitting).

The checker is plain functions over a directory, so the last tests run it on tiny synthetic trees
and watch it fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEVELS = {"wire": 0, "mqttsn": 0, "bridge": 1, "firmware_proto": 1, "mesh_sim": 2, "meshota": 3}
NO_TRANSPORT = {
    "bridge.api": ("bridge.http", "bridge.mqtt", "bridge.gateway", "uvicorn", "aiomqtt", "paho"),
}
MAX_LINES = 650
# modules allowed over MAX_LINES, each with the reason (none today); path -> reason
LONG_OK: dict[str, str] = {
    "firmware_proto/update_agent.py": "one persisted state machine (SPEC.md §4): every transition, its "
    "flash records and the install gate read together; the state table, job record and actions are "
    "already apart in update_state.py",
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module (or module.name), dotted, absolute
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path, packages: Iterable[str]) -> list[Path]:
    return sorted(p for pkg in packages for p in (root / pkg).rglob("*.py"))


def imports_of(root: Path, path: Path) -> list[Import]:
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend(Import(name, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if node.level and not node.module:  # from . import x: x is a module of the package
                found.extend(Import(name, f"{prefix}.{alias.name}", node.lineno) for alias in node.names)
            else:
                found.append(Import(name, prefix, node.lineno))
    return found


def all_imports(root: Path, packages: Iterable[str]) -> list[Import]:
    return [imp for path in source_files(root, packages) for imp in imports_of(root, path)]


def unit(module: str, root: Path) -> str:
    """The package directory a module belongs to, at most two levels deep.

    ``__main__`` is an entry point that nothing imports: a unit of its own.
    """
    parts = module.split(".")
    if parts[-1] == "__main__":
        return module
    depth = 1
    if len(parts) > 1 and (root / parts[0] / parts[1]).is_dir():
        depth = 2
    return ".".join(parts[:depth])


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a closed path ``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def unit_graph(imports: Iterable[Import], ours: Iterable[str], root: Path, depth: int) -> dict[str, set[str]]:
    ours = set(ours)
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.target.split(".")[0] not in ours:
            continue
        if depth == 1:
            a, b = imp.source.split(".")[0], imp.target.split(".")[0]
        else:
            a, b = unit(imp.source, root), unit(imp.target, root)
        if a != b:
            graph.setdefault(a, set()).add(b)
    return graph


def layer_violations(imports: Iterable[Import], levels: Mapping[str, int]) -> list[str]:
    bad = []
    for imp in imports:
        src, dst = imp.source.split(".")[0], imp.target.split(".")[0]
        if dst not in levels or src == dst:
            continue
        if levels[src] <= levels[dst]:
            bad.append(f"{imp.source}:{imp.line} imports {imp.target} ({src} may not import {dst})")
    return bad


def transport_violations(imports: Iterable[Import], rules: Mapping[str, tuple[str, ...]]) -> list[str]:
    bad = []
    for imp in imports:
        for package, banned in rules.items():
            if imp.source == package or imp.source.startswith(package + "."):
                for b in banned:
                    if imp.target == b or imp.target.startswith(b + "."):
                        bad.append(f"{imp.source}:{imp.line} imports {imp.target}")
    return bad


def long_modules(root: Path, packages: Iterable[str], limit: int) -> dict[str, int]:
    out = {}
    for path in source_files(root, packages):
        n = len(path.read_text().splitlines())
        if n > limit:
            out[path.relative_to(root).as_posix()] = n
    return out


# -- the tree --------------------------------------------------------------------------------------
IMPORTS = all_imports(ROOT, LEVELS)


def test_every_package_is_walked() -> None:
    walked = {imp.source.split(".")[0] for imp in IMPORTS}
    assert walked == set(LEVELS)
    assert len(source_files(ROOT, LEVELS)) > 100


def test_no_cycle_between_top_level_packages() -> None:
    assert find_cycle(unit_graph(IMPORTS, LEVELS, ROOT, depth=1)) is None


def test_no_cycle_between_subpackages() -> None:
    assert find_cycle(unit_graph(IMPORTS, LEVELS, ROOT, depth=2)) is None


def test_wire_imports_nothing_of_ours() -> None:
    ours = [i for i in IMPORTS if i.source.split(".")[0] == "wire" and i.target.split(".")[0] in LEVELS]
    assert [f"{i.source}:{i.line} imports {i.target}" for i in ours if not i.target.startswith("wire")] == []


def test_no_upward_import() -> None:
    assert layer_violations(IMPORTS, LEVELS) == []


def test_handlers_import_no_transport() -> None:
    assert transport_violations(IMPORTS, NO_TRANSPORT) == []


def test_no_module_over_650_lines() -> None:
    long = long_modules(ROOT, LEVELS, MAX_LINES)
    assert sorted(set(long) - set(LONG_OK)) == []
    # an exception that is no longer needed must go
    assert sorted(p for p in LONG_OK if p not in long) == []


# -- the checker fails when it should ----------------------------------------------------------------
def _tree(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_find_cycle_on_synthetic_graphs() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"y"}}) == ["y", "y"]
    assert find_cycle({"a": {"b", "d"}, "b": set(), "d": {"e"}, "e": {"d"}}) == ["d", "e", "d"]


def test_checker_finds_a_package_cycle_and_an_upward_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "low/__init__.py": "",
            "low/a.py": "def f():\n    from high.b import g  # lazy, still counted\n",
            "high/__init__.py": "",
            "high/b.py": "from low import a\n",
        },
    )
    imports = all_imports(root, ["low", "high"])
    assert find_cycle(unit_graph(imports, ["low", "high"], root, depth=1)) in (
        ["high", "low", "high"],
        ["low", "high", "low"],
    )
    assert layer_violations(imports, {"low": 0, "high": 1}) == [
        "low.a:2 imports high.b (low may not import high)"
    ]


def test_checker_finds_a_subpackage_cycle_through_relative_imports(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/core.py": "from .sub import thing\n",
            "pkg/sub/__init__.py": "from . import _impl\n",
            "pkg/sub/_impl.py": "import typing\nif typing.TYPE_CHECKING:\n    from ..core import X\n",
        },
    )
    imports = all_imports(root, ["pkg"])
    assert Import("pkg.sub", "pkg.sub._impl", 1) in imports
    assert Import("pkg.sub._impl", "pkg.core", 3) in imports
    assert find_cycle(unit_graph(imports, ["pkg"], root, depth=1)) is None  # one top-level package
    assert find_cycle(unit_graph(imports, ["pkg"], root, depth=2)) == ["pkg", "pkg.sub", "pkg"]


def test_checker_finds_a_transport_in_the_handlers_and_a_long_module(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "srv/__init__.py": "",
            "srv/api/__init__.py": "import aiomqtt\n",
            "srv/api/h.py": "from srv.http import app\n" + "x = 1\n" * 700,
            "srv/http/__init__.py": "",
        },
    )
    imports = all_imports(root, ["srv"])
    assert transport_violations(imports, {"srv.api": ("srv.http", "aiomqtt")}) == [
        "srv.api:1 imports aiomqtt",
        "srv.api.h:1 imports srv.http",
    ]
    assert long_modules(root, ["srv"], 650) == {"srv/api/h.py": 701}


# -- the tests' own layout -------------------------------------------------------------------------
def test_tests_import_helpers_one_way_and_fixtures_come_from_conftest() -> None:
    """Helpers: ``from tests.support.X import ...`` only; fixtures: defined in conftest.py files,
    never in tests/support/ and never imported; a conftest.py in every folder of test modules."""
    tests = ROOT / "tests"
    bad: list[str] = []
    for path in sorted(tests.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    bad.append(f"{rel}:{node.lineno} relative import")
                elif mod == "tests.support" or mod.endswith("conftest"):
                    bad.append(f"{rel}:{node.lineno} from {mod} import ...")
            elif isinstance(node, ast.Import):
                bad.extend(
                    f"{rel}:{node.lineno} import {a.name}" for a in node.names if a.name.startswith("tests")
                )
            elif isinstance(node, ast.FunctionDef) and rel.startswith("tests/support/"):
                for dec in node.decorator_list:
                    target = dec.func if isinstance(dec, ast.Call) else dec
                    if isinstance(target, ast.Attribute) and target.attr == "fixture":
                        bad.append(f"{rel}:{node.lineno} fixture {node.name} outside a conftest.py")
    folders = {p.parent for p in tests.rglob("test_*.py")}
    bad.extend(
        f"{f.relative_to(ROOT)} has no conftest.py"
        for f in sorted(folders)
        if not (f / "conftest.py").exists()
    )
    assert bad == []
