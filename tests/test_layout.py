"""The house rules of the code: no import circles, nothing imports upward, SQL only in backends, small modules."""

import ast
import re

from conftest import ROOT

# The modules below storage, which know nothing of HTTP, the CLI or the interface above them.
STORAGE_LAYER = re.compile(r"backends(\..+)?|records|clock|jsoncodec|diagnosis")
SQL = re.compile(r"\b(SELECT .+ FROM|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE (TABLE|INDEX)|PRAGMA \w+)")
MAX_LINES = 560


def project_modules():
    """Module name -> parsed source, for every module of the service (not tests, bench or scripts)."""
    paths = [*ROOT.glob("*.py"), *ROOT.glob("backends/*.py"), *ROOT.glob("cli/*.py")]
    modules = {}
    for path in paths:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = (path, ast.parse(path.read_text()))
    return modules


def imports(tree, modules):
    """The project modules a module imports, anywhere in it (imports inside functions count)."""
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        found.update(name for name in names if name in modules)
    return found


def test_no_module_imports_itself_through_others():
    modules = project_modules()
    graph = {name: imports(tree, modules) - {name} for name, (_, tree) in modules.items()}
    circles = []

    def visit(name, path):
        for imported in graph[name]:
            if imported in path:
                circles.append(path[path.index(imported) :] + [imported])
            elif imported not in done:
                visit(imported, [*path, imported])
        done.add(name)

    done = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert circles == []


def test_the_storage_layer_imports_nothing_above_it():
    modules = project_modules()
    upward = {
        name: sorted(imported for imported in imports(tree, modules) if not STORAGE_LAYER.fullmatch(imported))
        for name, (_, tree) in modules.items()
        if STORAGE_LAYER.fullmatch(name)
    }
    assert {name: found for name, found in upward.items() if found} == {}


def test_http_and_cli_code_never_name_a_backend():
    modules = project_modules()
    naming = {
        name: sorted(imported for imported in imports(tree, modules) if imported.startswith("backends"))
        for name, (_, tree) in modules.items()
        if not STORAGE_LAYER.fullmatch(name) and name != "storage"
    }
    assert {name: found for name, found in naming.items() if found} == {}


def test_every_sql_statement_lives_in_a_backend():
    outside = []
    for name, (_, tree) in project_modules().items():
        if name.startswith("backends"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                outside.append((name, node.lineno, node.value[:60]))
    assert outside == []


def test_each_module_is_small_and_says_its_job():
    for name, (path, tree) in project_modules().items():
        assert len(path.read_text().splitlines()) <= MAX_LINES, name
        docstring = ast.get_docstring(tree)
        assert docstring and docstring.strip(), name


def test_no_view_or_hook_is_a_coroutine(app):
    # BotstateFlask.ensure_sync skips Flask's per-request check for them: one would never be awaited.
    import inspect

    hooks = [
        *app.view_functions.values(),
        *(f for funcs in app.before_request_funcs.values() for f in funcs),
        *(f for funcs in app.after_request_funcs.values() for f in funcs),
        *(f for funcs in app.teardown_request_funcs.values() for f in funcs),
    ]
    assert hooks and not [f for f in hooks if inspect.iscoroutinefunction(inspect.unwrap(f))]
