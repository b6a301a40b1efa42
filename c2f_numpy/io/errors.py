"""The one error every reader of untrusted bytes raises, and helpers that keep its messages short.

Contract: a reader given bytes it cannot accept (corrupt, truncated, altered, hostile or merely not ours)
raises :class:`FileFormatError` (a ``ValueError``) or a subclass, whose message starts with the file's path
and says what was expected and what was found. Nothing else escapes a reader for bad bytes: a missing or
unreadable file is still the ``OSError`` the operating system gave. Messages never ``repr`` an object built
from the file (a pickle can build a structure whose repr takes longer than the age of the universe): they
use :func:`brief`, whose cost is bounded whatever it is given.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Final

import numpy as np

__all__ = ["MAX_JSON_DEPTH", "FileFormatError", "brief", "format_error", "json_loads_bounded"]

MAX_JSON_DEPTH: Final = 64
_BRIEF_CHARS: Final = 80


class FileFormatError(ValueError):
    """A file's bytes are not what its reader accepts. The message names the file, the expectation and the find.

    Subclasses say which reader: :class:`~c2f_numpy.io.CheckpointError` (torch ``.pth``),
    :class:`~c2f_numpy.io.WeightsFileError` (``.npz`` / ``.safetensors``), the training checkpoint's, the
    oracle dump's and the data sets' (``DataFormatError``) errors.
    """


def format_error(path: str | os.PathLike[str], expected: str, found: str) -> str:
    """``"<path>: expected <expected>, found <found>"``: the shape of every message of the contract."""
    return f"{os.fspath(path)}: expected {expected}, found {found}"


def brief(obj: object, limit: int = _BRIEF_CHARS) -> str:
    """A description of ``obj`` in at most about ``limit`` characters, in time independent of its size.

    Strings, bytes and numbers are shown (truncated); a container only by its type and length, never its items.
    """
    if obj is None or isinstance(obj, bool):
        return repr(obj)
    if isinstance(obj, int):
        # str() of a huge int is quadratic (and limited): show the bit length instead.
        return repr(obj) if obj.bit_length() <= 64 else f"<int of {obj.bit_length()} bits>"
    if isinstance(obj, float | complex):
        return repr(obj)
    if isinstance(obj, str | bytes | bytearray):
        text = repr(obj[:limit])
        return text if len(obj) <= limit else f"{text}... ({len(obj)} long)"
    if isinstance(obj, np.ndarray):
        return f"<array {obj.dtype} {obj.shape}>"
    if isinstance(obj, tuple | list | dict | set | frozenset):
        return f"<{type(obj).__name__} of {len(obj)} items>"
    return f"<{type(obj).__name__}>"


# A JSON string literal (with escapes); removing these leaves only the structure's brackets to count.
_JSON_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_loads_bounded(text: str, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(text)`` refusing nesting deeper than ``max_depth`` before parsing (the parser recurses).

    Raises ``ValueError`` naming ``what`` for invalid JSON or too deep nesting (callers wrap it with the file).
    """
    if not isinstance(text, str):
        raise ValueError(f"{what}: expected JSON text, found {brief(text)}")
    skeleton = _JSON_STRING.sub("", text)
    codes = np.frombuffer(skeleton.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    depth = int(np.cumsum(steps).max()) if steps.size else 0
    if depth > max_depth:
        raise ValueError(f"{what}: expected JSON nested at most {max_depth} deep, found {depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, too many digits, bad surrogates
        raise ValueError(f"{what}: expected valid JSON, found {brief(str(exc))}") from None
