"""The package's import graph runs strictly downward (issue 12; README "Layout"):
cli -> bench / train -> codec | adversarial -> model | salvage | deblock | container | audio | weights | data | losses -> spectral |
schedule | modules | metrics | precision -> version | atomic. Read from the source with ast, so lazy imports inside
functions count."""

import ast
from pathlib import Path

import m2lcodec

PACKAGE = Path(m2lcodec.__file__).parent
LAYERS = [
    {"version", "atomic"},
    {"spectral", "schedule", "modules", "metrics", "precision"},
    {"model", "baselines", "salvage", "deblock"},
    {"container", "audio", "weights", "losses"},
    {"data", "codec", "adversarial"},
    {"train", "bench"},
    {"cli"},
    {"__main__", "__init__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def imports_of(path: Path) -> set[str]:
    """m2lcodec modules imported anywhere in a file ("from m2lcodec import x" counts as the package
    itself unless x is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "m2lcodec":
            if node.module == "m2lcodec":
                for alias in node.names:
                    found.add(alias.name if (PACKAGE / f"{alias.name}.py").exists() else "__init__")
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "m2lcodec":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def test_every_module_has_a_layer():
    assert {p.stem for p in PACKAGE.glob("*.py")} == set(RANK)


def test_imports_only_go_down():
    upward = [(p.stem, dep) for p in PACKAGE.glob("*.py") for dep in imports_of(p)
              if dep != p.stem and RANK[dep] >= RANK[p.stem]]
    assert upward == [], f"imports that do not go to a lower layer: {upward}"
