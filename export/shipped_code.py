"""What project code a model ships and what it requires, read from the code itself.

:func:`shipped_modules` walks the ``import`` statements (``ast``; every one in the file,
inside functions and ``TYPE_CHECKING`` blocks too) of a loader module and of every project
module it reaches, so the set is closed by construction; :func:`third_party_imports` lists
the other top-level names those files import (the standard library left out) and
:func:`pip_requirements` maps them to installed distributions pinned to their versions. A
file that starts importing something new changes the model's code and requirements with it.
"""

from __future__ import annotations

import ast
import shutil
import sys
from collections.abc import Iterator, Mapping
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

from export.errors import ExportError

__all__ = [
    "PROJECT_ROOT",
    "shipped_modules",
    "third_party_imports",
    "pip_requirements",
    "copy_modules",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _module_file(name: str, root: Path) -> Path | None:
    """``a.b`` -> ``root/a/b.py`` or ``root/a/b/__init__.py`` (None: not a project module)."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_names(path: Path) -> Iterator[str]:
    """Every absolute module name ``path`` imports, and ``module.name`` for each ``from``
    import (a submodule or an attribute; the caller tells which)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise ExportError(
                    f"{path} uses a relative import; shipped modules import absolutely, "
                    "e.g. 'from export.serving import images_of'"
                )
            yield node.module or ""
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _with_packages(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def shipped_modules(loader: str, *, root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """``loader`` and every project module it imports, transitively, with their packages."""
    if _module_file(loader, root) is None:
        raise ExportError(f"loader module {loader!r} is not a module under {root}")
    seen: set[str] = set()
    todo = _with_packages(loader)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name, root)
        for imported in _imported_names(path) if path else ():
            if _module_file(imported, root) is not None:
                todo.extend(_with_packages(imported))
    return tuple(sorted(seen))


def third_party_imports(modules: tuple[str, ...], *, root: Path = PROJECT_ROOT) -> dict[str, set]:
    """Top-level name -> the dotted names imported under it, for every import in ``modules``
    that is neither the project's nor the standard library's."""
    found: dict[str, set] = {}
    for module in modules:
        path = _module_file(module, root)
        for imported in _imported_names(path) if path else ():
            top = imported.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            if _module_file(top, root) is None:
                found.setdefault(top, set()).add(imported)
    return found


def _distribution_of(top: str, imported: set, installed: Mapping[str, list[str]]) -> str:
    """The installed distribution that provides ``top``: the one named after it, else the
    one that owns the files of the subpackage imported (``cuda.bindings``: cuda-bindings)."""
    candidates = installed.get(top, [])
    for name in candidates:
        if name.lower().replace("_", "-") == top.lower().replace("_", "-"):
            return name
    subpackages = {f"{top}/{name.split('.')[1]}" for name in imported if name.count(".") >= 1}
    for name in candidates:
        files = distribution(name).files or []
        if any(str(f).startswith(tuple(subpackages)) for f in files):
            return name
    if len(candidates) == 1:
        return candidates[0]
    raise ExportError(
        f"the shipped code imports {top!r}, which no single installed distribution provides "
        f"(candidates: {candidates or 'none'}); install it, or pin it in the flavor's requirements"
    )


def pip_requirements(
    modules: tuple[str, ...], *, pinned: Mapping[str, str], root: Path = PROJECT_ROOT
) -> list[str]:
    """``name==version`` for each third-party import of ``modules`` (``pinned``: the
    requirement of an import that need not be installed here, e.g. ``tensorrt``)."""
    installed = packages_distributions()
    requirements = []
    for top, imported in sorted(third_party_imports(modules, root=root).items()):
        if top in pinned:
            requirements.append(pinned[top])
            continue
        name = _distribution_of(top, imported, installed)
        requirements.append(f"{name}=={distribution(name).version.split('+')[0]}")
    return requirements


def copy_modules(modules: tuple[str, ...], dest: Path, *, root: Path = PROJECT_ROOT) -> None:
    """Copy the files of ``modules`` under ``dest`` with their package layout."""
    for module in modules:
        source = _module_file(module, root)
        if source is None:
            raise ExportError(f"module {module!r} is not a file under {root}")
        target = dest / source.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
