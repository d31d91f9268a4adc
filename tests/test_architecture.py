"""The shape of the code, held by tests: one store, declared values, small modules.

* Only the result store opens SQLite: every read the pages need is one of its methods.
* Outside the probe library, values are read through the probes' declarations
  (``TlsValues.of(result).cert_not_after``, ``SyncValues.key.kind``), never by a key
  written as a string: a ``values["..."]`` / ``values.get("...")`` subscript or a
  ``'$.key'`` JSON path in a query.
* Every ``ProbeFailure`` the probe library raises names its ``Reason``.
* No module over ``MAX_LINES`` lines unless its docstring opens with a reason
  (``Longer than ... because ...``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("checks", "dashboard", "mailfleet")
STORE = ROOT / "dashboard" / "store"
MAX_LINES = 420
_JSON_PATH = re.compile(r"\$\.[a-z_]+")


def modules(*folders: str) -> Iterator[Path]:
    for folder in folders:
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            if not path.is_symlink() and not any(p.is_symlink() for p in path.parents):
                yield path


def _in_store(path: Path) -> bool:
    return path == ROOT / "dashboard" / "store.py" or STORE in path.parents


def test_only_the_store_opens_sqlite() -> None:
    offenders = []
    for path in modules(*PACKAGES):
        if _in_store(path):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "sqlite3" or n.startswith("sqlite3.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], f"SQLite opened outside dashboard/store: {offenders}"


def _values_expr(node: ast.expr) -> bool:
    """``x.values``, ``values``, ``v`` where ``v`` names a values mapping."""
    if isinstance(node, ast.Attribute):
        return node.attr == "values"
    return isinstance(node, ast.Name) and node.id in ("values", "v")


def value_key_literals(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript) and _values_expr(node.value):
            key = node.slice
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "get" and _values_expr(node.func.value) and node.args):
            key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {key.value!r}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in _JSON_PATH.findall(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {match}")
    return found


def test_readers_use_the_probes_declarations_not_key_strings() -> None:
    offenders = [hit for path in modules("dashboard", "mailfleet")
                 for hit in value_key_literals(path)]
    assert offenders == [], "value keys written as strings outside the probes: " + "; ".join(
        offenders)


def test_the_lint_finds_a_key_string() -> None:
    # The rule above must be able to fail: a reader written the old way is caught.
    sample = ROOT / "tests" / "_architecture_sample.py"
    sample.write_text('def f(r):\n    return r.values["cert_not_after"], '
                      '"json_extract(v, \'$.kind\')"\n')
    try:
        hits = value_key_literals(sample)
    finally:
        sample.unlink()
    assert len(hits) == 2, hits


def test_every_probe_failure_in_the_library_names_its_reason() -> None:
    # A reason guessed from words is a fallback for outside probes, never the mechanism.
    unnamed = []
    for path in modules("checks"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "ProbeFailure" and len(node.args) < 3
                    and not any(k.arg == "reason" for k in node.keywords)):
                unnamed.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert unnamed == [], f"ProbeFailure raised without a Reason: {unnamed}"


def test_no_module_is_long_without_a_reason() -> None:
    long = []
    for path in modules(*PACKAGES, "lab"):
        text = path.read_text()
        lines = text.count("\n")
        if lines <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not doc.startswith("Longer than"):
            long.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert long == [], f"modules over {MAX_LINES} lines with no reason at their top: {long}"
