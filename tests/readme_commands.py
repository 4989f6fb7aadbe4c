"""The commands of the README's fenced shell blocks, as a shell would read them.

Used by tests/test_readme.py (every command is run by a test) and by .ci/run, which executes the
README's two set-up commands exactly as written (`python3 tests/readme_commands.py setup|test`
prints them), so the README's install and test commands cannot drift from what CI does.
Standard library only: .ci/run calls it before any environment exists.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SHELL_LANGUAGES = ("sh", "bash", "shell", "console")
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Command:
    block: int        # index among the README's shell blocks
    line: int         # 1-based line in README.md where the command starts
    text: str         # the command, continuation lines joined, comment removed

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


def strip_comment(line: str) -> str:
    """`line` without a trailing `# comment` (a `#` outside quotes that starts a word)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
            elif char == "\\" and quote == '"':
                continue
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands(text: str | None = None) -> list[Command]:
    """Every command of every fenced shell block, in README order."""
    text = README.read_text() if text is None else text
    found: list[Command] = []
    block = -1
    for match in _FENCE.finditer(text):
        if match.group(1) not in SHELL_LANGUAGES:
            continue
        block += 1
        first_line = text.count("\n", 0, match.start(2)) + 1
        pending, start = "", 0
        for offset, raw in enumerate(match.group(2).splitlines()):
            line = strip_comment(raw)
            if not pending:
                start = first_line + offset
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            joined = (pending + line.strip()).strip()
            pending = ""
            if joined:
                found.append(Command(block, start, re.sub(r"\s+", " ", joined)))
    return found


def setup_commands(text: str | None = None) -> tuple[str, str]:
    """The README's two set-up commands: (install and run the main job, run the tests)."""
    cmds = commands(text)
    if len(cmds) < 2 or cmds[0].block != 0 or cmds[1].block != 1:
        raise SystemExit("README.md must open with two one-command shell blocks: install, test")
    return cmds[0].text, cmds[1].text


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what == "setup":
        print(setup_commands()[0])
    elif what == "test":
        print(setup_commands()[1])
    else:
        for cmd in commands():
            print(cmd)
