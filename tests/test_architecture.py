"""The package's structure as docs/architecture.md draws it: wings whose imports run one way, a
module map that matches the files, and documentation whose links resolve inside the repository."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "xrerank"
# The layers, lowest first. A module may import its own wing and any wing of a lower layer, never
# one of its own layer or above: cli -> perf -> deploy -> checks / integrations -> xinference ->
# weights -> families -> client -> the foundation (errors, defaults, names, files).
LAYERS = [
    {"errors", "defaults", "names", "files"},
    {"client"},
    {"families"},
    {"weights"},
    {"xinference"},
    {"checks", "integrations"},
    {"deploy"},
    {"perf"},
    {"cli"},
    {"__init__", "__main__"},
]
RANK = {wing: rank for rank, wings in enumerate(LAYERS) for wing in wings}
FOUNDATION_ORDER = ["errors", "defaults", "names", "files"]  # within the foundation, lower first


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _wing(module: str) -> str:
    """'xrerank.deploy.engine' -> 'deploy'; 'xrerank.errors' -> 'errors'."""
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "xrerank":
            if node.module == "xrerank":
                found += [(node.lineno, f"xrerank.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.append((node.lineno, "relative"))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "xrerank"]
    return found


def test_every_wing_is_in_a_layer():
    wings = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    assert wings <= set(RANK) | {"configs"}, wings - set(RANK)


def test_imports_run_one_way_down_the_layers():
    upward = []
    for path in _modules():
        wing = _wing("xrerank." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for line, module in _imports(path):
            assert module != "relative", f"{path}:{line}: a relative import (the wings import by full name)"
            target = _wing(module)
            if target == wing and wing not in FOUNDATION_ORDER:
                continue
            if wing in FOUNDATION_ORDER and target in FOUNDATION_ORDER:
                ok = FOUNDATION_ORDER.index(target) < FOUNDATION_ORDER.index(wing)
            else:
                ok = RANK[target] < RANK[wing]
            if not ok:
                upward.append(f"{path.relative_to(REPO)}:{line}: {wing} -> {module}")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_check_finds_an_upward_import(tmp_path):
    """The arrow check can fail: the client importing the adapter is caught."""
    leak = tmp_path / "leak.py"
    leak.write_text("from xrerank.xinference.local import embedded_api_key\n")
    ((_, module),) = _imports(leak)
    assert RANK[_wing(module)] > RANK["client"]


def test_the_client_imports_without_the_server_side_or_the_adapter():
    import subprocess
    import sys

    code = (
        "import sys; import xrerank.client, xrerank.integrations;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'xinference',"
        " 'sentence_transformers', 'xinference_client') or m.startswith(('xrerank.xinference', 'xrerank.deploy'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", loaded


def test_every_package_on_disk_is_in_the_wheel():
    """pyproject.toml lists the packages: a wing missing there is missing from every install."""
    block = re.search(r"^packages = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.MULTILINE | re.DOTALL)
    listed = set(re.findall(r'"([a-z_.]+)"', block.group(1)))
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in PACKAGE.rglob("__init__.py")}
    assert on_disk | {"xrerank.configs"} == listed, {"not listed": on_disk - listed, "not on disk": listed - on_disk}


def _module_map() -> list[str]:
    text = (REPO / "docs" / "architecture.md").read_text()
    return re.findall(r"^\| `(xrerank/[^`]+\.py)` \|", text, flags=re.MULTILINE)


def test_the_architecture_map_names_every_module_once_and_nothing_else():
    mapped = _module_map()
    on_disk = [str(p.relative_to(REPO)) for p in _modules()]
    assert len(mapped) == len(set(mapped)), [m for m in mapped if mapped.count(m) > 1]
    assert sorted(mapped) == sorted(on_disk), {
        "missing from docs/architecture.md": sorted(set(on_disk) - set(mapped)),
        "mapped but not in the package": sorted(set(mapped) - set(on_disk)),
    }


def _docs() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


@pytest.mark.parametrize("page", _docs(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves_inside_the_repository(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists() or REPO not in path.parents and path != REPO:
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: {broken}"


def test_the_readme_stays_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
