"""Package layering: contracts and nn below models, models below train; inference and serving
import no training code; no module imports another package's private (underscore) names."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "ml_core"


def imports(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def modules_of(*parts: str) -> list[Path]:
    base = ROOT.joinpath(*parts)
    return [base] if base.suffix == ".py" else sorted(base.rglob("*.py"))


def test_lower_layers_do_not_import_higher_ones():
    forbidden = {
        ("contracts",): ("ml_core.models", "ml_core.train", "ml_core.nn", "ml_core.inference", "ml_core.serving"),
        ("nn",): ("ml_core.models", "ml_core.train", "ml_core.inference", "ml_core.serving"),
        ("models",): ("ml_core.train", "ml_core.inference", "ml_core.serving"),
        ("inference.py",): ("ml_core.train",),
        ("serving",): ("ml_core.train",),
    }
    bad = [f"{p.relative_to(ROOT)} imports {m}" for parts, prefixes in forbidden.items() for p in modules_of(*parts)
           for m, _ in imports(p) if m.startswith(prefixes)]
    assert not bad, bad


def test_no_private_names_across_packages():
    bad = []
    for p in ROOT.rglob("*.py"):
        package = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts[:2])
        for module, names in imports(p):
            if module.startswith("ml_core.") and ".".join(module.split(".")[:2]) != package:
                bad += [f"{p.relative_to(ROOT)}: {module}.{n}" for n in names if n.startswith("_")]
    assert not bad, bad
