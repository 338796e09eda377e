"""The package's imports point one way, and each module keeps its own secrets.

Read with ``ast`` from every ``.py`` file under ``prostseg/`` (nothing is imported):

* no import cycle between prostseg modules, imports inside functions included
  (``from prostseg.x import y`` where ``y`` is a module is an edge to that module);
* the stages follow the book, and a module imports only from its own stage and the
  ones before it (:data:`ORDER`): the plumbing, ``data``, ``preparation``,
  ``networks``, the figures (``viz``), ``use``, ``training``; then the command line
  and the chapters' helpers (``prostseg.book``), which may import any stage;
* nothing outside ``prostseg.book`` (the chapters' helpers) imports it;
* no module imports another module's underscore-prefixed name (dunder names such as
  ``__version__`` are public);
* an import of a prostseg module inside a function only keeps a heavy dependency
  (TensorFlow, Keras, tf2onnx, ONNX, highdicom, Dask, itk) out of a light module: its
  target imports one at module level, itself or through the modules it imports;
* at most :data:`MAX_TOP_LEVEL` modules sit at the top of ``prostseg/`` besides
  ``__init__``, ``__main__`` and ``cli``; the others live in the stage subpackages.

Each check is a function of ``{module name: source}``, so the tests at the end show
that it finds what it looks for.
"""

from __future__ import annotations

import ast
from pathlib import Path

import prostseg

PACKAGE = Path(prostseg.__file__).parent
#: Modules that may sit at the top of the package besides these.
MAX_TOP_LEVEL = 10
TOP_LEVEL_EXTRAS = {"__init__", "__main__", "cli"}
#: Third-party packages whose import a light module defers into its functions.
HEAVY = {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "highdicom", "dask", "distributed", "itk"}
#: The order of the stages: a module imports only from its own place and earlier ones.
ORDER = (
    {"prostseg", "prostseg.errors", "prostseg.console", "prostseg.atomic", "prostseg.parallel", "prostseg.figure_png"},
    {"prostseg.data"},
    {"prostseg.preparation"},
    {"prostseg.networks"},
    {"prostseg.viz"},
    {"prostseg.use"},
    {"prostseg.training"},
    {"prostseg.cli", "prostseg.__main__", "prostseg.book"},
)


def package_sources(root: Path = PACKAGE) -> dict[str, str]:
    """``{dotted module name: source}`` of every ``.py`` file under ``root``."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


def _is_package(name: str, sources: dict[str, str]) -> bool:
    return any(other.startswith(name + ".") for other in sources)


def _imports(name: str, source: str, sources: dict[str, str]):
    """``(target module, imported name or None, line, inside a function)`` of each
    import of a module of ``sources`` by module ``name``."""
    tree = ast.parse(source)
    in_function = {id(node) for function in ast.walk(tree)
                   if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                   for node in ast.walk(function)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from the importing module's package
                package = name.split(".") if _is_package(name, sources) else name.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                module = ".".join(package + ([module] if module else []))
            targets = [(f"{module}.{alias.name}", None) if f"{module}.{alias.name}" in sources
                       else (module, alias.name) for alias in node.names]
        else:
            continue
        for target, imported in targets:
            if target in sources and target != name:
                yield target, imported, node.lineno, id(node) in in_function


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the modules of ``sources`` it imports, anywhere in its code."""
    return {name: {target for target, *_ in _imports(name, source, sources)}
            for name, source in sources.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(groups)


def private_imports(sources: dict[str, str]) -> list[str]:
    """``module:line imports target._name`` for each underscore-prefixed name taken."""
    found = []
    for name, source in sources.items():
        for target, imported, line, _ in _imports(name, source, sources):
            leaf = imported or target.rsplit(".", 1)[-1]
            dunder = leaf.startswith("__") and leaf.endswith("__")
            if leaf.startswith("_") and not dunder:
                found.append(f"{name}:{line} imports {target}.{imported}" if imported
                             else f"{name}:{line} imports {target}")
    return found


def _heavy_modules(sources: dict[str, str]) -> set[str]:
    """The modules that import a :data:`HEAVY` package at module level, or import one that does."""
    direct, imports = set(), {}
    for name, source in sources.items():
        tree = ast.parse(source)
        imports[name] = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            if any(module.split(".")[0] in HEAVY for module in modules):
                direct.add(name)
            imports[name].update(module for module in modules if module in sources)
    heavy = set(direct)
    while True:
        more = {name for name, targets in imports.items() if name not in heavy and targets & heavy}
        if not more:
            return heavy
        heavy |= more


def deferred_light_imports(sources: dict[str, str]) -> list[str]:
    """``module:line imports target`` for each import inside a function of a module that
    imports no heavy package (it could stand at the top of the file)."""
    heavy = _heavy_modules(sources)
    return list(dict.fromkeys(  # one line per import statement
        f"{name}:{line} imports {target}"
        for name, source in sources.items()
        for target, _, line, in_function in _imports(name, source, sources)
        if in_function and target not in heavy))


def stage_of(module: str) -> int:
    """The place of a module in :data:`ORDER` (its own, or its package's)."""
    for place, members in enumerate(ORDER):
        if any(module == member or (member != "prostseg" and module.startswith(member + "."))
               for member in members):
            return place
    raise ValueError(f"{module} belongs to no stage of ORDER")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``module imports target`` for each import of a later stage."""
    return sorted(f"{module} imports {target}" for module, targets in graph.items()
                  for target in targets if stage_of(target) > stage_of(module))


def top_level_modules(root: Path = PACKAGE) -> list[str]:
    """The modules at the top of the package, besides ``__init__``, ``__main__`` and ``cli``."""
    return sorted(path.stem for path in root.glob("*.py") if path.stem not in TOP_LEVEL_EXTRAS)


# --- the package -----------------------------------------------------------------


def test_the_imports_of_the_package_form_no_cycle():
    cycles = import_cycles(import_graph(package_sources()))
    assert not cycles, "import cycles (move the shared piece down a stage):\n" + \
        "\n".join(" <-> ".join(cycle) for cycle in cycles)


def test_each_stage_imports_only_from_the_stages_before_it():
    upward = upward_imports(import_graph(package_sources()))
    assert not upward, "imports of a later stage (move the shared piece down):\n" + "\n".join(upward)


def test_core_modules_import_nothing_from_the_book():
    upward = sorted(f"{module} imports {target}"
                    for module, targets in import_graph(package_sources()).items()
                    if not module.startswith("prostseg.book") for target in targets
                    if target.startswith("prostseg.book"))
    assert not upward, "the core must not depend on prostseg.book:\n" + "\n".join(upward)


def test_no_module_takes_another_modules_private_names():
    found = private_imports(package_sources())
    assert not found, "make these public and documented, or move them where they are used:\n" + \
        "\n".join(found)


def test_imports_inside_functions_only_defer_heavy_dependencies():
    found = deferred_light_imports(package_sources())
    assert not found, "import these at the top of the module:\n" + "\n".join(found)


def test_the_top_of_the_package_holds_few_modules():
    modules = top_level_modules()
    assert len(modules) <= MAX_TOP_LEVEL, f"{len(modules)} modules at the top of prostseg/: {modules}"
    for stage in ("data", "preparation", "networks", "use", "training"):
        assert (PACKAGE / stage / "__init__.py").is_file(), f"prostseg.{stage} is no package"


# --- the checks find what they look for ------------------------------------------

TOY = {
    "pkg": "",
    "pkg.a": "from pkg.b import thing\n",
    "pkg.b": "def f():\n    from pkg import c\n",
    "pkg.c": "from pkg.a import _secret, __version__\n",
    "pkg.d": "import pkg.a\n",
    "pkg.heavy": "import tensorflow as tf\n",
    "pkg.light": "def f():\n    from pkg.heavy import tf\n    from pkg.d import x\n",
}


def test_a_cycle_through_a_function_level_import_is_found():
    assert import_cycles(import_graph(TOY)) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert "pkg.c" in import_graph(TOY)["pkg.b"]  # `from pkg import c`: the submodule


def test_an_import_of_a_later_stage_is_found():
    graph = {"prostseg.data.io": {"prostseg.atomic", "prostseg.use.inference"},
             "prostseg.use.inference": {"prostseg.viz", "prostseg.data.io"},
             "prostseg.viz": {"prostseg.networks.runs"}, "prostseg.networks.runs": set()}
    assert upward_imports(graph) == ["prostseg.data.io imports prostseg.use.inference"]
    assert stage_of("prostseg") == stage_of("prostseg.atomic") < stage_of("prostseg.data")


def test_a_private_name_is_found_and_a_dunder_is_not():
    assert private_imports(TOY) == ["pkg.c:1 imports pkg.a._secret"]


def test_a_deferred_import_of_a_light_module_is_found():
    assert deferred_light_imports(TOY) == ["pkg.b:2 imports pkg.c", "pkg.light:3 imports pkg.d"]


def test_the_checks_read_the_layout_before_the_stages(tmp_path):
    """The layout of main before issue 19 (one flat folder) fails every check."""
    (tmp_path / "prostseg").mkdir()
    flat = {
        "__init__": "",
        "pipeline": "def f():\n    from prostseg.slice_cache import SliceSpec\n",
        "slice_cache": "from prostseg.recipes import recipe\n"
                       "def g():\n    from prostseg.pipeline import _load_unet_case\n",
        "recipes": "def h():\n    from prostseg.pipeline import unet_dataset\n",
    }
    flat.update({f"module_{i}": "" for i in range(MAX_TOP_LEVEL + 1)})
    for name, source in flat.items():
        (tmp_path / "prostseg" / f"{name}.py").write_text(source, encoding="utf-8")
    sources = package_sources(tmp_path / "prostseg")
    assert import_cycles(import_graph(sources)) == [["prostseg.pipeline", "prostseg.recipes",
                                                     "prostseg.slice_cache"]]
    assert private_imports(sources) == ["prostseg.slice_cache:3 imports prostseg.pipeline._load_unet_case"]
    assert len(top_level_modules(tmp_path / "prostseg")) > MAX_TOP_LEVEL
