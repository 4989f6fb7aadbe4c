"""Fitting plain-text reports (`--explain`, `--dry-run`) to a width: long values wrap at their
commas, spaces and slashes, under the column they started in, instead of running off the screen."""
from __future__ import annotations

import re

_BREAK_AFTER = re.compile(r"[^,;/ =]*[,;/ =]*")
_HANGING = re.compile(r"^(\s*\S+ {2,}|\s+)")


def wrap_cell(text: str, width: int) -> list[str]:
    """`text` in pieces of at most `width` characters, broken after a `,`, `;`, `/`, ` ` or `=`
    where one is near, else hard; joined back together the pieces are `text` again."""
    width = max(1, width)
    if len(text) <= width:
        return [text]
    pieces: list[str] = []
    current = ""
    for chunk in (c for c in _BREAK_AFTER.findall(text) if c):
        while chunk:
            if len(current) + len(chunk) <= width:
                current += chunk
                chunk = ""
            elif current:
                pieces.append(current)
                current = ""
            else:   # one chunk longer than the width: cut it
                pieces.append(chunk[:width])
                chunk = chunk[width:]
    if current:
        pieces.append(current)
    return pieces


def fit_line(line: str, width: int) -> list[str]:
    """`line` wrapped to `width`, continuation lines indented like its value: after a label and
    two spaces (`env      A=1 B=2`) or as deep as the line itself."""
    if len(line) <= width:
        return [line]
    match = _HANGING.match(line)
    indent = len(match.group(1)) if match and len(match.group(1)) <= width // 2 else 0
    head, rest = line[:indent], line[indent:]
    pieces = wrap_cell(rest, width - indent)
    return [(head if i == 0 else " " * indent) + piece.rstrip() for i, piece in enumerate(pieces)]


def fit_text(text: str, width: int) -> str:
    return "\n".join(out for line in text.split("\n") for out in fit_line(line, width))
