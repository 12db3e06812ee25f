"""The one writer and the one reader of the JSON files the course keeps beside its data.

Records of runs, benchmark records, shard manifests, index settings and on-disk index records are all small JSON
objects that a later run reads back. :func:`write_json` writes each one atomically (a run killed mid-write leaves
the previous file whole, never half a file); :func:`read_json_object` reads one back and refuses, naming the file,
what it is and what to do, anything that is not the object its writer wrote: a missing or truncated file, text that
is not JSON, a JSON list, an object tagged with another ``format``, or one without a field the reader needs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cache import write_atomic


def write_json(path: str | Path, value: Any) -> None:
    """Write ``value`` to ``path`` as indented JSON (UTF-8, a final newline) through
    :func:`course_utils.cache.write_atomic`, creating the folder."""
    text = json.dumps(value, indent=2) + "\n"
    write_atomic(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def read_json_object(
    path: str | Path, kind: str, remedy: str, format: str | None = None, fields: Sequence[str] = ()
) -> dict:
    """The JSON object in ``path``: a ``kind`` tagged ``"format": format`` (when given) that holds ``fields``.

    Args:
        path: the file.
        kind: what the file is, for messages ("shard manifest", "FaissIndex settings file").
        remedy: what the reader should do about a bad file ("rerun merge_shards"); ends every message.
        format: the value of the object's ``"format"`` key that its writer stamps; ``None`` checks no tag.
        fields: keys the object must have.

    Raises:
        ValueError: the file is missing or unreadable, not UTF-8 JSON, not a JSON object, of another ``format``,
            or lacks a field; the message names ``path``, ``kind`` and ``remedy``.
    """
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError and UnicodeDecodeError
        detail = err.strerror if isinstance(err, OSError) else err
        raise ValueError(
            f"{path} is missing or not a readable {kind} ({type(err).__name__}: {detail}); {remedy}"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} is a JSON {type(value).__name__}, not a {kind}; {remedy}")
    if format is not None and value.get("format") != format:
        raise ValueError(f"{path} is not a {kind} of format {format} (its format: {value.get('format')!r}); {remedy}")
    missing = [field for field in fields if field not in value]
    if missing:
        raise ValueError(f"{path} lacks {missing}, so it is not a {kind} this reader can use; {remedy}")
    return value
