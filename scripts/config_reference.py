"""The configuration reference page, generated from the typed configuration dataclasses.

Every key of every section of :class:`ml_core.config.PipelineConfig` (the ``[source]`` section
per ``source.kind``, nested tables such as ``train.distributed`` as their own tables), with its
type, its default and the comment written above its field in the source. The documentation
site builds the page with this module at every build (``scripts/mkdocs_hooks.py``), so it
cannot drift from the code; ``tests/unit/test_docs.py`` compares the keys it lists with the
dataclasses.

    .venv/bin/python scripts/config_reference.py > /tmp/configuration.md
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
import types
import typing
from typing import Any

from ml_core.config import SOURCE_KINDS, PipelineConfig

#: The page's path inside the documentation site.
PAGE = "reference/configuration.md"

INTRO = """\
# Configuration reference

Generated from the configuration dataclasses at every build of this site
(`scripts/config_reference.py`): every key of every section, its type, its default and the
comment written above it in the code. How the configuration is read, overridden and checked:
[Configuration](../configuration.md).

A key is written `section.key` in an override (`--set 'train.epochs=1'`,
`PipelineResource(overrides=[...])`) and as `key = value` under `[section]` in the TOML file.
"""


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment lines directly above its line in ``cls``'s own source (the
    ``#:`` doc comments and plain ``#`` comments, markers stripped), plus a comment on the same
    line after the value."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}  # line -> comment text
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").removeprefix(":").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    lines = source.splitlines()
    own = set(getattr(cls, "__annotations__", {}))
    out: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip().split(":", 1)[0].strip()
        if not line.startswith("    ") or line.startswith("     ") or name not in own or name in out:
            continue
        above, k = [], number - 1
        while k in comments and k not in code_lines:
            above.insert(0, comments[k])
            k -= 1
        if number in comments:  # after the value, on the field's own line
            above.append(comments[number])
        out[name] = " ".join(above)
    return out


def _defining_class(cls: type, name: str) -> type:
    """The class of ``cls``'s MRO whose body declares the field ``name`` last (the one whose
    comment documents it)."""
    return next(c for c in cls.__mro__ if name in getattr(c, "__annotations__", {}))


def _nested_dataclass(tp: Any) -> type | None:
    """The dataclass a field's type names (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def _type_text(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("absent" if a is type(None) else _type_text(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return "table"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_text(a) for a in args)}]"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _toml(value: Any) -> str:
    """A default as it would be written in the TOML file."""
    if value is None:
        return "absent"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}" if value else "{}"
    if dataclasses.is_dataclass(value):
        return _toml(dataclasses.asdict(value))
    return repr(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def rest_to_markdown(text: str) -> str:
    """The reST of the code's comments and docstrings as Markdown: a role (``:class:`x```) becomes
    code (double backquotes are already a Markdown code span)."""
    return _ROLE.sub(lambda m: f"`{m.group(1).lstrip('~')}`", text)


_ROLE = re.compile(r":[a-z]+:`([^`]+)`")


def _cell(text: str) -> str:
    return rest_to_markdown(text).replace("|", "\\|").replace("\n", " ")


def _rows(prefix: str, cls: type, names: list[str] | None = None) -> tuple[list[str], list[tuple[str, type]]]:
    """Table rows of ``cls``'s fields (``names`` only, if given) and the nested tables found."""
    hints = typing.get_type_hints(cls)
    rows, nested = [], []
    fields = [f for f in dataclasses.fields(cls) if names is None or f.name in names]
    comments: dict[type, dict[str, str]] = {}
    for f in fields:
        owner = _defining_class(cls, f.name)
        note = comments.setdefault(owner, field_comments(owner)).get(f.name, "")
        if not note:  # a field documented in the comment of the field above it
            previous = [g.name for g in dataclasses.fields(owner)]
            for before in reversed(previous[: previous.index(f.name)]):
                text = comments[owner].get(before, "")
                if f"``{f.name}``" in text or f"`{f.name}`" in text:
                    note = f"See `{prefix}{before}`."
                    break
        tp, default = hints[f.name], _default(f)
        sub = _nested_dataclass(tp)
        if sub is not None:
            nested.append((f"{prefix}{f.name}", sub))
            note = f"{note} Its keys: [`{prefix}{f.name}`](#{_anchor(prefix + f.name)}).".strip()
        if prefix == "source." and f.name == "kind":
            type_text, default_text = " | ".join(json.dumps(k) for k in SOURCE_KINDS), _toml(PipelineConfig().source.kind)
            note = note or "Which source: the dataclass of the section (the kinds below)."
        else:
            type_text = _type_text(tp)
            default_text = "required" if default is dataclasses.MISSING else _toml(default)
        rows.append(f"| `{prefix}{f.name}` | {_cell(type_text)} | `{_cell(default_text)}` | {_cell(note)} |")
    return rows, nested


def _anchor(key: str) -> str:
    return key.replace(".", "")


def _table(title: str, key: str, cls: type, names: list[str] | None = None, intro: str = "") -> list[str]:
    rows, nested = _rows(f"{key}.", cls, names)
    doc = inspect.getdoc(cls) if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "(") else ""
    out = [f"## {title} {{#{_anchor(key)}}}" if title.startswith("[") else f"### {title}", ""]
    for text in (intro, doc if names is None else ""):
        if text:
            out += [rest_to_markdown(text), ""]
    out += ["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    for sub_key, sub in nested:
        out += _table(f"[{sub_key}]", sub_key, sub)
    return out


def _source_section() -> list[str]:
    """``[source]``: the fields every kind has, then each kind's own, grouped by the class that
    declares them (the fields of every file source are listed once)."""
    out = [f"## [source] {{#{_anchor('source')}}}", "",
           "`source.kind` picks the dataclass of the section; each kind takes the fields every source has "
           "plus only its own (a field of another kind is a configuration error).", ""]
    base = next(c for c in reversed(PipelineConfig().source.__class__.__mro__) if dataclasses.is_dataclass(c))
    groups: dict[type, list[str]] = {}  # declaring class -> its fields
    kinds_of: dict[type, list[str]] = {}  # declaring class -> the kinds that have them
    for kind, cls in SOURCE_KINDS.items():
        for f in dataclasses.fields(cls):
            owner = base if f.name == "kind" else _defining_class(cls, f.name)  # each kind narrows `kind`
            names, kinds = groups.setdefault(owner, []), kinds_of.setdefault(owner, [])
            names += [] if f.name in names else [f.name]
            kinds += [] if kind in kinds else [kind]
    for owner, names in groups.items():
        kinds = kinds_of[owner]
        title = "every kind" if len(kinds) == len(SOURCE_KINDS) else "kind " + ", ".join(f'"{k}"' for k in kinds)
        rows, nested = _rows("source.", SOURCE_KINDS[kinds[0]], names)
        doc = (inspect.getdoc(owner) or "").split("\n\n")[0]
        out += [f"### {title}", "", *([rest_to_markdown(doc), ""] if doc else []),
                "| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
        for sub_key, sub in nested:
            if f"{{#{_anchor(sub_key)}}}" not in "\n".join(out):
                out += _table(f"[{sub_key}]", sub_key, sub)
    return out


def render() -> str:
    """The whole page (Markdown)."""
    out = [INTRO]
    hints = typing.get_type_hints(PipelineConfig)
    for f in dataclasses.fields(PipelineConfig):
        if f.name == "source":
            out += _source_section()
        else:
            out += _table(f"[{f.name}]", f.name, hints[f.name])
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
