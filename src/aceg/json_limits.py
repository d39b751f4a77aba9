"""JSON read from files with a bound on nesting, so that no input reaches Python's
recursion limit (``[[[[...]]]]`` 100,000 deep makes :func:`json.loads` raise
``RecursionError``).

:func:`parse_json` measures the nesting depth first, in one linear pass over the text
(escapes dropped, then strings, then everything but brackets), and parses only when it is
at most :data:`MAX_JSON_DEPTH`. Syntax errors, integers too long for Python to convert and
too deep nesting all become :class:`~aceg.errors.AcegError` naming the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from aceg.errors import AcegError, file_error

#: Deepest nesting of arrays and objects accepted. The files aceg reads need a handful
#: (transforms.json: object > frames > frame > matrix > row).
MAX_JSON_DEPTH = 64

_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def nesting_depth(text: str) -> int:
    """Deepest nesting of ``[`` / ``{`` in JSON ``text``, brackets inside strings not
    counted. Linear in the length of ``text``."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text)))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def parse_json(text: str, where: str | Path, max_depth: int = MAX_JSON_DEPTH):
    """The value of JSON ``text`` read from ``where`` (a file, named in errors);
    :class:`AcegError` for invalid JSON or nesting deeper than ``max_depth``."""
    depth = nesting_depth(text)
    if depth > max_depth:
        raise file_error(where, f"JSON nested {depth} levels deep (at most {max_depth} are read)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise file_error(where, f"invalid JSON ({exc.msg}, column {exc.colno})", exc.lineno) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of over 4300 digits
        raise AcegError(f"{where}: invalid JSON ({str(exc).splitlines()[0][:120]})") from None
