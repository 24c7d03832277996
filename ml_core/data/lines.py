"""What a line of a CSV source may hold before it is split into fields.

The reader (:mod:`ml_core.data.readers`) scans a CSV file as one text column per line, with a
separator byte that text CSV does not hold (:data:`LINE_SEPARATOR`); a line holding it anyway is
found here (:func:`lines_holding`) and quarantined, as is a line with a control character
(:data:`CONTROL_CHARS`) that would end or corrupt a field.
"""

from __future__ import annotations

import mmap
import os

#: The separator the CSV lines are scanned with, so that a line is one column: a byte that text
#: CSV does not hold. A line that holds it anyway would be cut there (the part before it read as
#: a row, as it was before): :func:`lines_holding` finds those lines, and they are quarantined.
LINE_SEPARATOR = "\x1f"


def lines_holding(file: str, byte: bytes) -> list[int]:
    """1-based numbers of the lines of ``file`` that hold ``byte`` (``memchr`` over a memory
    map: a file without it, the normal case, costs one pass at memory speed)."""
    out: list[int] = []
    with open(file, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return out
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            line, counted, pos = 1, 0, mm.find(byte)
            while pos != -1:
                line += mm[counted:pos].count(b"\n")
                counted = pos
                if not out or out[-1] != line:
                    out.append(line)
                pos = mm.find(byte, pos + 1)
    return out


#: Characters no text field holds: C0 controls but newline (which ends the line; a lone CR stays
#: in it) and DEL. A tab is allowed where it is the separator.
CONTROL_CHARS = r"[\x00-\x09\x0b-\x1f\x7f]"
