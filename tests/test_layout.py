"""The package's shape, checked from the source: who may start process pools, who may import
whom, and that benchmarks change the library only through its options.

Imports are read with ``ast`` (module-level and inside functions alike, relative ones
resolved), so a lazy import counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "forgetless"
BENCHMARKS = ROOT / "benchmarks"

#: Calls that start worker processes: a pool, or the context pools are made from.
POOL_MAKERS = {
    "concurrent.futures.ProcessPoolExecutor",
    "concurrent.futures.process.ProcessPoolExecutor",
    "multiprocessing.Pool",
    "multiprocessing.pool.Pool",
    "multiprocessing.get_context",
    "torch.multiprocessing.Pool",
    "torch.multiprocessing.get_context",
}
#: The one module that starts worker processes: the sweep runner (a local pool, or Ray).
POOL_OWNER = "src/forgetless/sweeps.py"
#: Modules that train or store runs: what pure code (figures, measures) must not import.
DRIVERS = ("studies", "sweeps", "experiment", "runs", "engine")
#: What a measure of models (analysis/) must not import: the loop and the run store.
NOT_FOR_ANALYSIS = ("engine", "experiment", "runs", "sweeps")


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "results" not in p.relative_to(folder).parts)


def _module_name(path: Path) -> str | None:
    """``forgetless.a.b`` for a file of the package, else None (benchmarks are scripts)."""
    if PACKAGE not in path.parents:
        return None
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every module ``path`` imports (``from a import b`` yields ``a`` and ``a.b``, since ``b``
    may be a module), with its line."""
    module = _module_name(path)
    package = None
    if module is not None:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if package is None:
                    continue  # a script's relative import cannot reach the package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def _names_bound_by_imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it stands for, for every import in the file."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.expr, names: dict[str, str]) -> str | None:
    """The dotted name an expression such as ``mp.get_context`` stands for, or None."""
    attributes = []
    while isinstance(node, ast.Attribute):
        attributes.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([names.get(node.id, node.id), *reversed(attributes)])


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node


def pool_makers(path: Path) -> list[str]:
    """``line: call`` for each call in ``path`` that starts a process pool (also ``x.Pool()``
    on a context of unknown origin)."""
    tree = _tree(path)
    names = _names_bound_by_imports(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func, names)
            plain = isinstance(node.func, ast.Attribute) and node.func.attr == "Pool"
            if name in POOL_MAKERS or plain:
                found.append((node.lineno, node.col_offset, name or ast.unparse(node.func)))
    return [f"{line}: {name}" for line, _, name in sorted(found)]


def forbidden_imports(folder: Path, forbidden: tuple[str, ...]) -> list[str]:
    """``file:line imports module`` for each import under ``folder`` of ``forgetless.NAME``
    (or a module inside it) for ``NAME`` in ``forbidden``."""
    bad = []
    prefixes = tuple(f"forgetless.{name}" for name in forbidden)
    for path in _python_files(folder):
        for module, line in _imports(path):
            if any(module == p or module.startswith(p + ".") for p in prefixes):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return sorted(set(bad))


def library_patches(path: Path) -> list[str]:
    """``line: target`` for each assignment in ``path`` to an attribute or item of something
    imported from forgetless (a module, class or object of the library), and each
    ``setattr``/``delattr`` on one."""
    tree = _tree(path)
    names = _names_bound_by_imports(tree)
    library = {local for local, dotted in names.items() if dotted.split(".")[0] == "forgetless"}
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("setattr", "delattr")
            and node.args
        ):
            targets = [ast.Attribute(value=node.args[0], attr="?")]
        for target in targets:
            for part in target.elts if isinstance(target, ast.Tuple) else [target]:
                root = _root(part)
                if part is not root and isinstance(root, ast.Name) and root.id in library:
                    found.append((node.lineno, node.col_offset, ast.unparse(part)))
    return [f"{line}: {name}" for line, _, name in sorted(found)]


def test_the_checks_see_what_they_look_for(tmp_path):
    # The checks themselves, on a file that does each thing they forbid.
    script = tmp_path / "bad.py"
    script.write_text(
        "import multiprocessing as mp\n"
        "from concurrent.futures import ProcessPoolExecutor as Pool\n"
        "from forgetless.strategies import gss\n"
        "from forgetless.buffer import MemoryBuffer\n"
        "import forgetless.engine\n"
        "def f(context):\n"
        "    Pool(2); mp.get_context('spawn'); context.Pool(2)\n"
        "    gss.replacements = None\n"
        "    setattr(MemoryBuffer, 'sample', None)\n"
        "    forgetless.engine.EVAL_LOGITS += 1\n"
        "    from forgetless.runs import RunStore\n"
        "    config = object(); config.lr = 0.1\n"
    )
    assert pool_makers(script) == [
        "7: concurrent.futures.ProcessPoolExecutor",
        "7: multiprocessing.get_context",
        "7: context.Pool",
    ]
    assert library_patches(script) == [
        "8: gss.replacements",
        "9: MemoryBuffer.?",
        "10: forgetless.engine.EVAL_LOGITS",
    ]
    modules = {m for m, _ in _imports(script)}
    assert {"forgetless.engine", "forgetless.runs", "forgetless.runs.RunStore"} <= modules


def test_only_the_sweep_runner_creates_process_pools_in_the_package():
    makers = {
        str(path.relative_to(ROOT)): found
        for path in _python_files(PACKAGE)
        if (found := pool_makers(path))
    }
    assert list(makers) == [POOL_OWNER], makers


def test_benchmarks_create_no_process_pools():
    # They run their configs through benchmarks/grid.py, which is sweeps.run_sweep.
    makers = {
        str(path.relative_to(ROOT)): found
        for path in _python_files(BENCHMARKS)
        if (found := pool_makers(path))
    }
    assert makers == {}


def test_report_imports_no_driver():
    # Figures and pages are made from Results and stored files alone.
    assert forbidden_imports(PACKAGE / "report", DRIVERS) == []


def test_analysis_imports_no_loop_and_no_store():
    # Measures of models and representations: they train nothing and store nothing.
    assert forbidden_imports(PACKAGE / "analysis", NOT_FOR_ANALYSIS) == []


def test_benchmarks_patch_nothing_in_the_library():
    # A variant a benchmark measures is a config field or a strategy parameter
    # (GSS(draws="sequential"), RunConfig.init), and timing is an option of the library
    # (forgetless.buffer.timing), never an assignment to the library's attributes.
    patches = {
        str(path.relative_to(ROOT)): found
        for path in _python_files(BENCHMARKS)
        if (found := library_patches(path))
    }
    assert patches == {}
