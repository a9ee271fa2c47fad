"""Code blocks of the documentation that the tests run as written.

A block the tests run is marked with ``<!-- test: NAME -->`` on the line right before its
fence; ``blocks`` returns every block of one name and language, in order.
"""

from __future__ import annotations

import re
from pathlib import Path

MARKED_BLOCK = re.compile(r"^<!-- test: (\w+) -->\n```(\w+)\n(.*?)^```$", re.M | re.S)
MARKER = re.compile(r"^<!-- test: (\w+) -->$", re.M)


def blocks(markdown: Path, name: str, language: str) -> list[str]:
    """The code of every fenced block marked ``<!-- test: name -->``, in order."""
    found = [
        code
        for tag, lang, code in MARKED_BLOCK.findall(markdown.read_text())
        if tag == name and lang == language
    ]
    assert found, f"{markdown.name} has no ```{language} block marked <!-- test: {name} -->"
    return found


def markers_before_fences(markdown: Path) -> bool:
    """True when every ``<!-- test: … -->`` marker of ``markdown`` is right before a fence."""
    text = markdown.read_text()
    return len(MARKER.findall(text)) == len(MARKED_BLOCK.findall(text))
