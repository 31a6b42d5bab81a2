"""A griffe extension for the API reference: the docstrings' Sphinx roles (``:class:`~a.b.C```,
``:mod:`.backends```) become inline code (`` `C` ``, `` `.backends` ``), and double-backtick literals
single-backtick code, so the reference reads as Markdown."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")
LITERAL = re.compile(r"``([^`]+)``")


def _role(match: re.Match) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = LITERAL.sub(r"`\1`", ROLE.sub(_role, obj.docstring.value))
