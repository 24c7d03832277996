"""The README and the documentation site, checked against the code: the README's commands exist
and take the options it gives them, its links resolve, the site builds with ``mkdocs build
--strict`` (a broken link, anchor or stale mkdocstrings reference fails), and the generated
configuration reference lists exactly the keys of the configuration dataclasses."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import types
import typing

import pytest

from ml_core.config import SOURCE_KINDS, PipelineConfig
from scripts.config_reference import render
from tests.conftest import REPO

README = (REPO / "README.md").read_text()

#: A command in the README: optional VAR=value words, then make, python -m or a script.
COMMAND = re.compile(r"^(?:\w+=\S+\s+)*((?:\.venv/bin/)?python -m \S+.*|(?:\.venv/bin/)?python \S+\.py.*|make \S+.*)$")


def _readme_commands() -> list[str]:
    """Every command of the README's ``bash`` blocks and inline code spans (comments dropped,
    continuation lines joined)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            found.append(line.split("#", 1)[0].strip())
    found += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", README, flags=re.S).replace("\n", " "))
    return sorted({m.group(1).strip() for c in found if (m := COMMAND.match(c.strip()))})


def test_the_readme_is_a_first_page():
    assert len(README.splitlines()) <= 300
    assert "```bash\nmake run" in README and "make test" in README.split("## The daily flow")[0]


def test_every_readme_command_exists_and_takes_its_options():
    commands = _readme_commands()
    assert any(c.startswith("make run") for c in commands) and any("run_flow" in c for c in commands), commands
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    helps: dict[str, str] = {}
    for command in commands:
        words = shlex.split(command)
        if words[0] == "make":
            assert words[1] in targets, f"{command}: no make target {words[1]!r}"
            continue
        words = words[1:]  # python
        program = words[:2] if words[0] == "-m" else words[:1]
        if program[0] != "-m":
            assert (REPO / program[0]).is_file(), f"{command}: no file {program[0]}"
        key = " ".join(program)
        if key not in helps:
            out = subprocess.run([sys.executable, *program, "--help"], cwd=REPO, capture_output=True, text=True,
                                 timeout=120)
            assert out.returncode == 0, f"{key} --help: {out.stderr[-2000:]}"
            helps[key] = out.stdout
        for option in (w.split("=", 1)[0] for w in words[len(program):] if w.startswith("--")):
            assert option in helps[key], f"{command}: {key} takes no {option}"


def test_the_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README):
        if not target.startswith(("http://", "https://")):
            assert (REPO / target).exists(), f"README links to {target}, which does not exist"


def _keys(prefix: str, cls: type) -> set[str]:
    """``prefix.field`` for every field of the dataclass ``cls``, nested tables (``X`` or
    ``X | None``) expanded."""
    hints, keys = typing.get_type_hints(cls), set()
    for f in dataclasses.fields(cls):
        key, tp = f"{prefix}.{f.name}", hints[f.name]
        keys.add(key)
        options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        for sub in (o for o in options if dataclasses.is_dataclass(o)):
            keys |= _keys(key, sub)
    return keys


def test_the_configuration_reference_lists_every_key_of_every_section():
    hints, expected = typing.get_type_hints(PipelineConfig), set()
    for section in dataclasses.fields(PipelineConfig):
        if section.name == "source":  # a tagged union: every kind's fields
            expected |= set().union(*(_keys("source", cls) for cls in SOURCE_KINDS.values()))
        else:
            expected |= _keys(section.name, hints[section.name])
    page = render()
    listed = re.findall(r"^\| `([\w.]+)` \|", page, re.M)
    assert set(listed) == expected
    twice = {k for k in listed if listed.count(k) > 1}
    assert all(k.startswith("source.") for k in twice), twice  # only a field two source kinds both declare
    # the comment above a field is its meaning, and the default is the dataclass's
    assert re.search(r"^\| `train\.train_days` \| int \| `3` \| T: days of samples", page, re.M)
    assert re.search(r'^\| `source\.kind` \| .*"table" \| `"synthetic"` \|', page, re.M)


@pytest.mark.timeout(600)
def test_the_documentation_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=REPO,
                         capture_output=True, text=True, timeout=540, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    reference = (site / "reference" / "configuration" / "index.html").read_text()
    assert "train.distributed.nproc" in reference and "registry.lease_s" in reference
    equations = (site / "reference" / "models" / "index.html").read_text()
    assert "\\mathcal{Z}" in equations and 'class="arithmatex"' in equations  # MoGE's docstring, as math
