"""The layer rules of the package (README "Layout", docs/ARCHITECTURE.md), checked on its imports.

Every ``import`` and ``from ... import`` of every module is read with ``ast`` (those inside
functions too: a deferred import is still a dependency) and checked against the table below.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dicomweb_nb", "jupyter_server_ext")

# What each layer may import of the package besides itself. errors, workspace, protocol and fileio
# are leaves: they import nothing of the package.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "workspace": set(),
    "protocol": set(),
    "fileio": set(),
    "dicom": {"errors"},
    "pixels": {"dicom", "errors"},
    "store": {"dicom", "pixels", "errors", "fileio", "workspace"},
    "server": {"store", "dicom", "pixels", "errors", "fileio", "workspace", "protocol", "client"},
    "client": {"store", "dicom", "pixels", "errors", "fileio", "workspace", "protocol"},
    # The widgets show what the client gives: the pure dicom/pixels rules read and draw it.
    "widgets": {"client", "dicom", "pixels", "errors", "workspace"},
    "jupyter_server_ext": {"server", "workspace"},
    # The applications on top: the command line, the sample data, the public names.
    "cli": {"*"},
    "samples": {"*"},
    "__init__": {"*"},
}

# Narrower rules inside a layer: (layer, imported layer) -> the only modules of the layer that may.
ONLY_FROM = {
    ("client", "store"): {"dicomweb_nb.client.local"},  # the in-process source
    ("server", "client"): {"dicomweb_nb.server.proxy", "dicomweb_nb.server.remotes", "dicomweb_nb.server.transfers"},
}

# Libraries that speak HTTP (or serve it): the pure layers and the store know no HTTP.
HTTP_LIBRARIES = {"tornado", "requests", "urllib3", "http", "aiohttp", "httpx", "jupyter_server"}
NO_HTTP = {"errors", "workspace", "protocol", "fileio", "dicom", "pixels", "store"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted
    names: tuple[str, ...]
    line: int


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            folder = root.joinpath(*target.split("."))
            names = []
            for alias in node.names:  # `from . import x`: x is a module, or a name of the package
                if (folder / f"{alias.name}.py").exists() or (folder / alias.name / "__init__.py").exists():
                    found.append(Import(module, f"{target}.{alias.name}", (), node.lineno))
                else:
                    names.append(alias.name)
            if names:
                found.append(Import(module, target, tuple(names), node.lineno))
    return found


def layer_of(module: str) -> str | None:
    """``dicomweb_nb.store.index.sql`` -> ``store``; the package root is ``__init__``."""
    parts = module.split(".")
    if parts[0] == "jupyter_server_ext":
        return "jupyter_server_ext"
    if parts[0] != "dicomweb_nb":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def violation(imp: Import) -> str | None:
    """Why this import breaks a layer rule, or None."""
    source = layer_of(imp.module)
    if source is None:
        return None
    top = imp.target.split(".")[0]
    if top in HTTP_LIBRARIES and source in NO_HTTP:
        return f"{source} knows no HTTP, but imports {imp.target}"
    target = layer_of(imp.target)
    if target is None or target == source:
        return None
    if target == "__init__":
        if set(imp.names) <= {"__version__"}:
            return None  # the package's version is everyone's
        return f"{source} imports the package root (public names): import from their modules"
    allowed = ALLOWED.get(source, set())
    if "*" not in allowed and target not in allowed:
        return f"{source} may not import {target} ({imp.target})"
    only = ONLY_FROM.get((source, target))
    if only is not None and imp.module not in only:
        return f"in {source}, only {', '.join(sorted(only))} may import {target} ({imp.target})"
    return None


def package_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_every_import_keeps_the_layer_rules():
    broken = [f"{imp.module}:{imp.line}: {why}" for path in package_files() for imp in imports_of(path)
              if (why := violation(imp))]
    assert not broken, "layer rules broken:\n" + "\n".join(broken)


def test_every_layer_has_a_rule():
    layers = {layer_of(module_name(p)) for p in package_files()}
    assert layers <= set(ALLOWED), f"modules of no known layer: {sorted(layers - set(ALLOWED))}"


@pytest.mark.parametrize(("module", "target", "names", "broken"), [
    ("dicomweb_nb.store.importer", "dicomweb_nb.client.config", ("store_folder",), True),
    ("dicomweb_nb.store.ingest", "tornado.web", (), True),
    ("dicomweb_nb.errors", "dicomweb_nb.dicom.tags", (), True),
    ("dicomweb_nb.pixels.render", "dicomweb_nb.server.renderparams", (), True),
    ("dicomweb_nb.pixels.render", "dicomweb_nb.dicom.dicomjson", (), False),
    ("dicomweb_nb.client.connect", "dicomweb_nb.store.store", (), True),
    ("dicomweb_nb.client.local", "dicomweb_nb.store.store", (), False),
    ("dicomweb_nb.server.wado", "dicomweb_nb.client.web", (), True),
    ("dicomweb_nb.server.remotes", "dicomweb_nb.client.web", (), False),
    ("dicomweb_nb.widgets.viewer", "dicomweb_nb.store", (), True),
    ("dicomweb_nb.widgets.viewer", "dicomweb_nb.client.client", (), False),
    ("jupyter_server_ext.extension", "dicomweb_nb.client.config", (), True),
    ("dicomweb_nb.client.segmentation", "dicomweb_nb", ("__version__",), False),
    ("dicomweb_nb.client.segmentation", "dicomweb_nb", ("connect",), True),
])
def test_the_rules_catch_what_they_forbid(module, target, names, broken):
    assert (violation(Import(module, target, names, 1)) is not None) == broken


def test_imports_inside_functions_and_relative_imports_are_read(tmp_path):
    package = tmp_path / "dicomweb_nb" / "store"
    package.mkdir(parents=True)
    (package / "reader.py").write_text("")
    (package / "source.py").write_text("def f():\n    from ..client.protocol import BulkPart\nfrom . import reader, Store\n")
    found = {(i.target, i.names) for i in imports_of(package / "source.py", tmp_path)}
    assert found == {("dicomweb_nb.client.protocol", ("BulkPart",)), ("dicomweb_nb.store.reader", ()),
                     ("dicomweb_nb.store", ("Store",))}
