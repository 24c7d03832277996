"""ml_core must be usable without Dagster: importing every module pulls in no dagster."""

import subprocess
import sys

from tests.conftest import REPO


def test_ml_core_imports_no_dagster():
    code = (
        "import importlib, pkgutil, sys, ml_core\n"
        "for m in pkgutil.walk_packages(ml_core.__path__, 'ml_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'dagster' or n.startswith('dagster.'))\n"
        "assert not bad, bad\n"
        "print('modules ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "modules ok" in out.stdout


def test_no_source_file_mentions_dagster():
    offenders = [p for p in (REPO / "ml_core").rglob("*.py") if "import dagster" in p.read_text()
                 or "from dagster" in p.read_text()]
    assert offenders == []
