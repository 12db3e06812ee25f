"""The one writer and the one reader of the JSON files the course keeps beside its data.

Records of runs, benchmark records, shard manifests, index settings and on-disk index records are all small JSON
objects that a later run reads back. :func:`write_json` writes each one atomically (a run killed mid-write leaves
the previous file whole, never half a file); :func:`read_json_object` reads one back and refuses, naming the file,
what it is and what to do, anything that is not the object its writer wrote: a missing or truncated file, text that
is not JSON, a JSON array, an object tagged with another ``format``, or one without a field the reader needs or
with one of another type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .cache import write_atomic


def standard_json(value: Any) -> Any:
    """``value`` with NumPy / torch scalars made plain, inside lists, tuples and dicts too, and NaN and ±inf made
    ``None`` (standard JSON has neither, and Python's ``NaN`` / ``Infinity`` tokens break other readers)."""
    if isinstance(value, dict):
        return {key: standard_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [standard_json(item) for item in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, value: Any, indent: int | None = 2) -> None:
    """Write ``value`` to ``path`` as standard JSON (:func:`standard_json`: a NaN is written ``null``; UTF-8, a final
    newline; indented unless ``indent`` is ``None``, as for a large memo no one reads by eye) through
    :func:`course_utils.cache.write_atomic`, creating the folder."""
    text = json.dumps(standard_json(value), indent=indent, allow_nan=False) + "\n"
    write_atomic(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def read_json_object(
    path: str | Path,
    kind: str,
    remedy: str,
    format: str | None = None,
    fields: Sequence[str] | Mapping[str, type | tuple[type | None, ...]] = (),
) -> dict:
    """The JSON object in ``path``: a ``kind`` tagged ``"format": format`` (when given) that holds ``fields``.

    Args:
        path: the file.
        kind: what the file is, for messages ("shard manifest", "FaissIndex settings file").
        remedy: what the reader should do about a bad file ("rerun merge_shards"); ends every message.
        format: the value of the object's ``"format"`` key that its writer stamps; ``None`` checks no tag.
        fields: keys the object must have; a mapping also gives each key's JSON type (``int``, ``str``, ``bool``,
            ``dict``, ``list``, ``float`` for any number), or a tuple of them, ``None`` allowing ``null``. ``true``
            is not an ``int`` here, as it is in Python.

    Raises:
        ValueError: the file is missing or unreadable, not UTF-8 JSON, not a JSON object, of another ``format``,
            lacks a field or holds one of another type; the message names ``path``, ``kind`` and ``remedy``.
    """
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError and UnicodeDecodeError
        detail = err.strerror if isinstance(err, OSError) else err
        raise ValueError(
            f"{path} is missing or not a readable {kind} ({type(err).__name__}: {detail}); {remedy}"
        ) from None
    return check_json_object(value, str(path), kind, remedy, format, fields)


def check_json_object(
    value: Any,
    where: str,
    kind: str,
    remedy: str,
    format: str | None = None,
    fields: Sequence[str] | Mapping[str, type | tuple[type | None, ...]] = (),
) -> dict:
    """``value``, checked as :func:`read_json_object` checks a file's object (the same arguments), where ``where``
    names it in messages: a file, or an object inside one ("<file>: table 'training'")."""
    if not isinstance(value, dict):
        raise ValueError(
            f"{where} is a JSON {_type_names(None if value is None else type(value))}, not a {kind}; {remedy}"
        )
    if format is not None and value.get("format") != format:
        raise ValueError(f"{where} is not a {kind} of format {format} (its format: {value.get('format')!r}); {remedy}")
    missing = [field for field in fields if field not in value]
    if missing:
        raise ValueError(f"{where} lacks {missing}, so it is not a {kind} this reader can use; {remedy}")
    if isinstance(fields, Mapping):
        for field, expected in fields.items():
            if not _is_json_type(value[field], expected if isinstance(expected, tuple) else (expected,)):
                raise ValueError(
                    f"{where}: {field} is {json.dumps(value[field])[:60]}, not a JSON {_type_names(expected)}, so it "
                    f"is not a {kind} this reader can use; {remedy}"
                )
    return value


def _is_json_type(value: Any, expected: tuple[type | None, ...]) -> bool:
    if value is None:
        return None in expected
    if isinstance(value, bool):
        return bool in expected
    if float in expected and isinstance(value, (int, float)):
        return True
    return any(kind is not None and kind is not float and isinstance(value, kind) for kind in expected)


def _type_names(expected: type | tuple[type | None, ...]) -> str:
    names = {
        int: "integer",
        float: "number",
        str: "string",
        bool: "boolean",
        dict: "object",
        list: "array",
        None: "null",
    }
    return " or ".join(names[kind] for kind in (expected if isinstance(expected, tuple) else (expected,)))
