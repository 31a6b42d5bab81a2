"""The architecture, enforced: no import cycles (imports inside functions count), the import contracts of
``pyproject.toml`` hold and bite, importing one family (or the core) loads no other family, and the
top-level package hands out its public names lazily."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_between_any_two_modules():
    graph = grimp.build_graph("unifusion_sam", exclude_type_checking_imports=True)
    assert "unifusion_sam.sam.adapter.checkpoint" in graph.modules
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    assert _cycles(graph) == []
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('unifusion_sam'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_one_family_loads_no_other_family_and_no_training():
    uniref = _loaded_after("import unifusion_sam.uniref")
    assert "unifusion_sam.uniref.segmenter" in uniref
    assert not any(m.startswith(("unifusion_sam.sam", "unifusion_sam.training")) for m in uniref), uniref
    sam = _loaded_after("import unifusion_sam.sam")
    assert "unifusion_sam.sam.adapter.model" in sam
    assert not any(m.startswith(("unifusion_sam.uniref", "unifusion_sam.training")) for m in sam), sam


def test_the_top_level_package_loads_no_family_until_asked():
    assert _loaded_after("import unifusion_sam") == {"unifusion_sam", "unifusion_sam.version"}
    loaded = _loaded_after("from unifusion_sam import wrap_sam, VideoSession")
    assert "unifusion_sam.sam" in loaded and not any(m.startswith("unifusion_sam.uniref") for m in loaded)
    import unifusion_sam

    assert set(unifusion_sam.__all__) <= set(dir(unifusion_sam))
    for name in unifusion_sam.__all__:
        assert getattr(unifusion_sam, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        unifusion_sam.not_a_name  # noqa: B018


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed")
def test_the_import_contracts_hold_and_a_forbidden_import_breaks_them(tmp_path):
    kept = subprocess.run([str(LINT_IMPORTS)], capture_output=True, text=True, cwd=ROOT)
    assert kept.returncode == 0, kept.stdout[-3000:]
    assert "broken" not in kept.stdout.split("Contracts:")[-1].split(",")[0]

    # a copy of the package where the contract file imports a family: `lint-imports` must fail
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "unifusion_sam", copy / "unifusion_sam", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    contract = copy / "unifusion_sam" / "interface.py"
    contract.write_text(contract.read_text() + "\n\ndef _bad():\n    from .sam import wrap_sam  # noqa: F401\n")
    broken = subprocess.run([str(LINT_IMPORTS)], capture_output=True, text=True, cwd=copy,
                            env={**os.environ, "PYTHONPATH": str(copy)})
    assert broken.returncode != 0, broken.stdout[-3000:]
    assert "unifusion_sam.interface -> unifusion_sam.sam" in broken.stdout


def _resolves(parts: list[str]) -> bool:
    import importlib

    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


# paths that are not this checkout's on purpose
ELSEWHERE = {"docs/Ref-Youtube-VOS.md": "a file of ReferFormer's repository",
             "unifusion_sam/adapters": "the installed wheel's copy of adapters/"}


def test_docstrings_and_docs_refer_only_to_what_the_project_contains():
    """Dotted names (``unifusion_sam.x.y``, and relative roles such as ``:mod:`.backends```) resolve, and the
    project paths named in the code, the docs and the README exist."""
    import re

    texts = {p: p.read_text() for p in [*(ROOT / "unifusion_sam").rglob("*.py"), *(ROOT / "docs").rglob("*.md"),
                                         ROOT / "README.md", ROOT / "adapters" / "README.md",
                                         *(ROOT / "recipes").rglob("*.*"), *(ROOT / "benchmarks").glob("*.py"),
                                         *(ROOT / "eval").glob("*.py")]}
    missing = set()
    for path, text in texts.items():
        for name in re.findall(r"unifusion_sam(?:\.[A-Za-z_]\w*)+", text):
            if not _resolves(name.split(".")):
                missing.add(f"{path.relative_to(ROOT)}: {name}")
        for ref in re.findall(r"(?<![\w/.])((?:unifusion_sam|docs|recipes|benchmarks|eval|adapters|tests)/[\w./*-]*\w)", text):
            if "*" not in ref and ref not in ELSEWHERE and not (ROOT / ref).exists():
                missing.add(f"{path.relative_to(ROOT)}: {ref}")
        if path.suffix == ".py" and path.is_relative_to(ROOT / "unifusion_sam"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            package = module.removesuffix(".__init__") if module.endswith(".__init__") else module.rsplit(".", 1)[0]
            for ref in re.findall(r":(?:mod|class|func|meth|data|attr):`~?(\.+[A-Za-z_][\w.]*)`", text):
                dots = len(ref) - len(ref.lstrip("."))
                base = package.split(".")[: len(package.split(".")) - (dots - 1)]
                if not _resolves(base + ref.lstrip(".").split(".")):
                    missing.add(f"{path.relative_to(ROOT)}: {ref}")
    assert not missing, sorted(missing)
