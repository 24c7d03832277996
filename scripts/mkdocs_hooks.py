"""The documentation site's build hooks (``mkdocs.yml``: ``hooks`` and mkdocstrings' ``extensions``).

* :func:`on_files` adds the configuration reference, generated from the configuration
  dataclasses at every build (:mod:`scripts.config_reference`), so the page cannot drift.
* :class:`RestDocstrings` turns the reST of the code's docstrings into the Markdown mkdocstrings
  renders: ``.. math::`` blocks into ``$$`` blocks (MathJax, through ``pymdownx.arithmatex``),
  roles such as ``:class:`x``` into code, ``::`` before a literal block into ``:``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import griffe
from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for scripts.config_reference
from scripts.config_reference import PAGE, render, rest_to_markdown


def on_files(files, config):
    """mkdocs hook: the generated configuration reference joins the site's files."""
    files.append(File.generated(config, PAGE, content=render()))
    return files


_MATH_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def math_blocks(text: str) -> str:
    """Each ``.. math::`` directive's indented block becomes ``$$`` blocks, one per equation
    (the directive's blank-line separated paragraphs); roles inside them become plain text."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != ".. math::":
            out.append(re.sub(r"(\S)::$", r"\1:", line))
            i += 1
            continue
        indent, block, i = len(line) - len(line.lstrip()), [], i + 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            block.append(lines[i].strip())
            i += 1
        equations, current = [], []
        for b in block + [""]:
            if b:
                current.append(_MATH_ROLE.sub(r"\1", b))
            elif current:
                equations.append(current)
                current = []
        pad = " " * indent
        for eq in equations:
            out += ["", f"{pad}$$", *(pad + e for e in eq), f"{pad}$$", ""]
    return "\n".join(out)


class RestDocstrings(griffe.Extension):
    """griffe extension: every docstring's reST as the Markdown the site renders."""

    def on_object(self, *, obj, loader, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rest_to_markdown(math_blocks(obj.docstring.value))
