"""The one-line summary of an error, for the messages that name the file or input it came from.

Libraries raise messages over many lines; torch's refusal to unpickle a file under ``weights_only=True`` also advises
loading it with ``weights_only=False``, which would run any code pickled into the file. No message of the course
passes that advice on (README › Errors and bad input).
"""

from __future__ import annotations


def error_summary(err: BaseException, limit: int = 300) -> str:
    """``err``'s message on one line, cut at ``limit`` characters, for messages that name a file it came from.

    torch's refusal to unpickle a file under ``weights_only=True`` runs over many lines and advises loading it with
    ``weights_only=False`` (which runs any code pickled into it); the summary keeps only what it found.
    """
    message = " ".join(str(err).split())
    if message.startswith("Weights only load failed"):
        found = message.partition("WeightsUnpickler error:")[2].partition(" Check the documentation")[0].strip()
        message = f"not a file of tensors torch reads safely ({found or 'unsupported content'})"
    message = message[:limit] + " …" if len(message) > limit else message
    return f"{type(err).__name__}: {message}" if message else type(err).__name__
