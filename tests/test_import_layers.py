"""Imports point one way: from applications down to building blocks (README "Layers")."""

from __future__ import annotations

import ast
import os

import pytest

from conftest import REPO_ROOT

PACKAGE = os.path.join(REPO_ROOT, "monai_cae")

LAYERS = (
    ("_version", "utils", "distributed"),
    ("networks", "losses", "transforms", "optimizers", "clustering"),
    ("data",),
    ("inference",),
    ("engines", "handlers"),
    ("evaluation", "visualize", "reports"),
    ("apps", "reproduce", "bundle"),
)
"""Each part of ``monai_cae`` may import from its own layer and the layers before it, never from a later one."""

LAYER_OF = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str | None:
    """``monai_cae.engines.trainer`` -> ``engines``; ``None`` for the package itself and for other packages."""
    names = module.split(".")
    return names[1] if names[0] == "monai_cae" and len(names) > 1 else None


def imported_modules(path: str, module: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every import of a file, relative ones resolved."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(name, node.lineno, id(node) in top_level) for name in names]
    return found


def package_modules() -> list[tuple[str, str]]:
    modules = []
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, REPO_ROOT)[: -len(".py")].replace(os.sep, ".")
                modules.append((path, dotted.removesuffix(".__init__")))
    return modules


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {entry for entry in os.listdir(PACKAGE) if not entry.startswith("__")}
    parts = {entry.removesuffix(".py") for entry in parts if entry.endswith(".py") or
             os.path.isdir(os.path.join(PACKAGE, entry))}
    assert parts == set(LAYER_OF)


def backwards_imports(modules: list[tuple[str, str]]) -> list[str]:
    """``file:line source -> target`` for every import of a later layer (or of the package top) in ``modules``."""
    backwards = []
    for path, module in modules:
        source = part_of(module)
        if source is None:  # monai_cae/__init__.py gathers the subpackages
            continue
        for target, line, _ in imported_modules(path, module):
            target_part = part_of(target)
            if (target_part is not None and LAYER_OF[target_part] > LAYER_OF[source]) or target == "monai_cae":
                backwards.append(f"{os.path.basename(path)}:{line} {source} -> {target_part or target}")
    return backwards


def test_no_import_runs_backwards() -> None:
    assert backwards_imports(package_modules()) == []


@pytest.mark.parametrize("code, expected", [
    ("from monai_cae.engines import CAETrainer\n", ["fake.py:1 data -> engines"]),
    ("def f():\n    from ..reports import write_report\n", ["fake.py:2 data -> reports"]),
    ("import monai_cae\n", ["fake.py:1 data -> monai_cae"]),
    ("from monai_cae.utils.io import atomic_write\nfrom .dicom import decode_dicom\n", []),
])
def test_a_backwards_import_is_found(tmp_path, code: str, expected: list[str]) -> None:
    path = tmp_path / "fake.py"
    path.write_text(code)
    assert backwards_imports([(str(path), "monai_cae.data.fake")]) == expected


def test_parts_of_one_layer_do_not_import_each_other_both_ways() -> None:
    edges = set()
    for path, module in package_modules():
        source = part_of(module)
        edges |= {(source, part_of(target)) for target, _, _ in imported_modules(path, module)
                  if source is not None and part_of(target) not in (None, source)}
    assert {(a, b) for a, b in edges if (b, a) in edges} == set()


def test_no_import_of_this_package_is_deferred_into_a_function() -> None:
    """A lazy import of monai_cae, or one under TYPE_CHECKING, dodges a cycle: the module is in the wrong place."""
    deferred = [f"{os.path.relpath(path, REPO_ROOT)}:{line} {target}" for path, module in package_modules()
                for target, line, top in imported_modules(path, module)
                if not top and target.startswith("monai_cae")]
    assert deferred == []
