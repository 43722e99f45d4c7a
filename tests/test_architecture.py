"""The tree's rules, checked from the source text (nothing is imported or run):

* no import circle between the project's modules, counting the imports inside functions too
  (a lazy import still makes a circle when both ends are loaded);
* no source module over 450 lines, and no function over 80 (`end_lineno - lineno + 1`, nested
  functions counted in their parent too);
* only `dogops/local/`, `dogops/aws/` and the factory (`dogops/backends/`) choose between the
  backends: nowhere else compares a backend name or tests for an `s3://` URI to pick one;
* a flow builds its backend once and hands it to its tasks: no task calls the factory, and no
  flow function calls it more than once.

`KNOWN_*` lists what is still to be moved: a new entry there is a step back, an entry that no
longer applies must be removed (the tests say which).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dogops", "flows", "tasks", "model_code", "deployments", "dogops_cli")
MAX_LINES = 450
MAX_FUNCTION_LINES = 80
BACKEND_HOMES = ("dogops/local/", "dogops/aws/", "dogops/backends/")

KNOWN_LONG: set[str] = set()
# Functions still over MAX_FUNCTION_LINES ("path::name"): none is left.
KNOWN_LONG_FUNCTIONS: set[str] = set()
# Backend choices still made outside the backends (file -> how many): none is left, so any new
# one fails the test below.
KNOWN_BACKEND_CHOICES: dict[str, int] = {}

_BACKEND_CHOICE = re.compile(
    r"""backend\s*(==|!=)\s*["'](aws|local)["']|["'](aws|local)["']\s*(==|!=)\s*\S*backend"""
    r"""|startswith\(\s*\(?\s*["']s3://"""
)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def test_the_checker_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    assert _circles(_import_graph(_modules())) == []


def test_no_module_over_the_line_limit() -> None:
    long = {
        path.relative_to(REPO).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in _modules().values()
    }
    over = {name: lines for name, lines in long.items() if lines > MAX_LINES}
    assert set(over) - KNOWN_LONG == set(), f"modules over {MAX_LINES} lines: {over}"
    assert KNOWN_LONG - set(over) == set(), "no longer over the limit: drop from KNOWN_LONG"


def _long_functions(source: str, limit: int) -> dict[str, int]:
    """Functions and methods (any depth) of `source` longer than `limit` lines: name -> lines."""
    return {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > limit
    }


def test_the_function_length_checker() -> None:
    def function(name: str, lines: int, indent: str = "") -> str:  # `lines` with the def line
        return f"{indent}def {name}():\n" + "".join(
            f"{indent}    x = {i}\n" for i in range(lines - 1))

    source = function("at_limit", 80) + "class C:\n" + function("method", 81, "    ")
    assert _long_functions(source, 80) == {"method": 81}


def test_no_function_over_the_line_limit() -> None:
    over = {
        f"{path.relative_to(REPO).as_posix()}::{name}": lines
        for path in _modules().values()
        for name, lines in _long_functions(path.read_text(encoding="utf-8"),
                                           MAX_FUNCTION_LINES).items()
    }
    assert set(over) - KNOWN_LONG_FUNCTIONS == set(), (
        f"functions over {MAX_FUNCTION_LINES} lines: "
        f"{ {k: v for k, v in over.items() if k not in KNOWN_LONG_FUNCTIONS} }"
    )
    assert KNOWN_LONG_FUNCTIONS - set(over) == set(), (
        "no longer over the limit: drop from KNOWN_LONG_FUNCTIONS"
    )


@pytest.mark.parametrize("line, choice", [
    ('if settings.backend == "aws":', True),
    ("if status.backend != 'local':", True),
    ('if model_uri.startswith("s3://"):', True),
    ('if uri.startswith(("s3://", "file://")):', True),
    ('backend: Backend = "local"', False),
    ('"the local backend"', False),
])
def test_the_backend_choice_pattern(line: str, choice: bool) -> None:
    assert bool(_BACKEND_CHOICE.search(line)) is choice


def test_only_the_backends_choose_a_backend() -> None:
    found: dict[str, int] = {}
    for path in _modules().values():
        name = path.relative_to(REPO).as_posix()
        if name.startswith(BACKEND_HOMES):
            continue
        hits = len(_BACKEND_CHOICE.findall(path.read_text(encoding="utf-8")))
        if hits:
            found[name] = hits
    new = {k: v for k, v in found.items() if v > KNOWN_BACKEND_CHOICES.get(k, 0)}
    assert new == {}, f"backend choices outside dogops/local, dogops/aws and the factory: {new}"
    gone = {k for k, v in KNOWN_BACKEND_CHOICES.items() if found.get(k, 0) < v}
    assert gone == set(), f"fewer choices left here now: lower KNOWN_BACKEND_CHOICES for {gone}"


# Top to bottom; a package imports only the packages below it (dogops_cli and deployments are
# both entry points, above the flows).
LAYERS = (("dogops_cli", "deployments"), ("flows",), ("tasks",), ("dogops",), ("model_code",))


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def test_each_layer_imports_only_the_layers_below() -> None:
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in _import_graph(_modules()).items()
        for target in targets
        if _layer(target) < _layer(source)
        or (_layer(target) == _layer(source) and target.split(".")[0] != source.split(".")[0])
    )
    assert upward == []


# The factory's entry points: `get_backend` and the two that build one part of a backend, and
# `registry_for`, which builds a store (for callers with no backend at hand: the CLI).
FACTORY_CALLS = {"get_backend", "store_for", "operations_for", "registry_for"}


def _factory_calls(source: str) -> dict[str, list[str]]:
    """Per top-level function (or "<module>"), the factory functions it calls, in order."""
    found: dict[str, list[str]] = {}
    tree = ast.parse(source)
    for top in tree.body:
        scope = top.name if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)) else (
            "<module>")
        for node in ast.walk(top):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else (
                    func.attr if isinstance(func, ast.Attribute) else "")
                if called in FACTORY_CALLS:
                    found.setdefault(scope, []).append(called)
    return found


def test_the_factory_call_finder() -> None:
    source = (
        "def flow_a(settings):\n    b = get_backend(settings)\n    return backends.store_for(s)\n"
        "def other(settings):\n    return len(settings)\n"
    )
    assert _factory_calls(source) == {"flow_a": ["get_backend", "store_for"]}


def test_flows_build_the_backend_once_and_tasks_never() -> None:
    problems = []
    for path in _modules().values():
        name = path.relative_to(REPO).as_posix()
        calls = _factory_calls(path.read_text(encoding="utf-8"))
        if name.startswith("tasks/"):
            problems += [f"{name}::{fn} calls {c} (take the flow's backend instead)"
                         for fn, cs in calls.items() for c in cs]
        elif name.startswith("flows/"):
            problems += [f"{name}::{fn} calls {cs} (build the backend once: get_backend)"
                         for fn, cs in calls.items() if cs != ["get_backend"]]
    assert problems == []


# Loops that sleep outside dogops/waiting.py, each with why `poll` does not fit. Any other loop
# around a sleep is a hand-written wait: use `dogops.waiting.poll` / `wait_until` instead.
SLEEPING_LOOPS_ALLOWED = {
    # A retry schedule on an exception (IAM propagation), not a wait for a state.
    "dogops/aws/propagation.py::call_with_role",
    # A bake of fixed length that reports progress: it ends on time by design (no timeout to
    # raise) and its last sleep shrinks to land on that end.
    "dogops/local/rollout.py::_bake",
}


def _is_sleep(node: ast.AST) -> bool:
    """`time.sleep(...)`, `asyncio.sleep(...)`, or an injected `sleep(...)` / `_sleep(...)`."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr == "sleep") or (
        isinstance(func, ast.Name) and func.id in ("sleep", "_sleep"))


def _sleeping_loops(source: str) -> set[str]:
    """Names of the functions (`<module>` at the top) holding a for/while loop that sleeps."""
    found: set[str] = set()

    def visit(node: ast.AST, owner: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
                continue
            if isinstance(child, ast.For | ast.AsyncFor | ast.While) and any(
                _is_sleep(n) for n in ast.walk(child)
            ):
                found.add(owner)
            visit(child, owner)

    visit(ast.parse(source), "<module>")
    return found


def test_the_sleeping_loop_checker() -> None:
    source = (
        "import time\n"
        "def waits(deadline):\n"
        "    while time.monotonic() < deadline:\n"
        "        time.sleep(0.1)\n"
        "def counts(sleep):\n"
        "    for _ in range(50):\n"
        "        sleep(0.2)\n"
        "def ticks(stop):\n"
        "    while not stop.wait(1):\n"
        "        put_to_sleep()\n"
        "def once():\n"
        "    time.sleep(1)\n"
    )
    assert _sleeping_loops(source) == {"waits", "counts"}


def test_waits_go_through_the_one_poll_helper() -> None:
    found = {
        f"{path.relative_to(REPO).as_posix()}::{name}"
        for path in _modules().values()
        if path.relative_to(REPO).as_posix() != "dogops/waiting.py"
        for name in _sleeping_loops(path.read_text(encoding="utf-8"))
    }
    assert found - SLEEPING_LOOPS_ALLOWED == set(), (
        f"loops around a sleep outside dogops/waiting.py (use poll / wait_until): "
        f"{sorted(found - SLEEPING_LOOPS_ALLOWED)}"
    )
    assert SLEEPING_LOOPS_ALLOWED - found == set(), "no longer sleeps in a loop: drop it"
