"""docs/dagster.md lists the beta, preview and deprecated Dagster APIs the code location uses and
why each is kept: loading the definitions must warn about exactly those."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO

#: (subject, function) of each kept API's warning at load, as Dagster words it.
KEPT = {("observable_source_asset", ""), ("backfill_policy", "asset")}


def test_loading_the_definitions_warns_only_about_the_documented_apis():
    out = subprocess.run([sys.executable, "-W", "always", "-c", "import orchestration.definitions"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    found = set(re.findall(r"(?:Beta|Preview|Deprecation|Supersession)Warning: \w+ `([^`]+)`(?: of function `([^`]+)`)?",
                           out.stderr))
    assert found == KEPT, out.stderr[-3000:]
    page = (REPO / "docs" / "dagster.md").read_text()
    for subject, function in KEPT:
        assert f"{function}({subject}=" in page or f"@{subject}" in page, subject
