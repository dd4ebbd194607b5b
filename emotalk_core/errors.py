"""The project's exceptions. Each is raised once where the problem is found and reported once at
the edge (command line, stdio server, add-on operator). Every message names the problem and what
to do. `report_error` is every command line's report of one: one line on stderr and `EXIT_ERROR`."""

from __future__ import annotations

import sys

from .protocol import (
    AUDIO_ERROR,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MODEL_ERROR,
    OUT_OF_MEMORY,
    REQUEST_CANCELLED,
)

EXIT_ERROR = 1  # the exit status of a command line stopped by an EmoTalkError


class EmoTalkError(Exception):
    """Base class. `code` is the JSON-RPC error code the stdio server reports for it."""

    code = INTERNAL_ERROR

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail or message

    def __str__(self) -> str:
        return self.message


class AudioError(EmoTalkError):
    """Audio that cannot be read, is empty, or holds invalid samples."""

    code = AUDIO_ERROR


class ModelError(EmoTalkError):
    """A model folder or checkpoint that is missing, corrupt or does not fit the network."""

    code = MODEL_ERROR


class ResourceError(EmoTalkError):
    """Out of memory (host or device)."""

    code = OUT_OF_MEMORY


class ControlError(EmoTalkError):
    """Invalid controls or request parameters (unknown preset, person out of range, bad window)."""

    code = INVALID_PARAMS


class OutputError(EmoTalkError):
    """An output file that cannot be written (missing folder, unknown extension)."""

    code = INVALID_PARAMS


class Cancelled(EmoTalkError):
    """The caller cancelled the work. The one message, which docs/protocol.md quotes for a
    `$/cancelRequest`, whichever layer notices the cancel first."""

    code = REQUEST_CANCELLED

    def __init__(self, message: str = "cancelled by the client", detail: str | None = None):
        super().__init__(message, detail)


def report_error(exc: EmoTalkError, program: str) -> int:
    """Print `PROGRAM: error: MESSAGE (HINT)` on stderr (the hint only where the error has one
    beyond its message) and return `EXIT_ERROR` for the caller to exit with."""
    hint = f" ({exc.detail})" if exc.detail and exc.detail != exc.message else ""
    print(f"{program}: error: {exc.message}{hint}", file=sys.stderr)
    return EXIT_ERROR
