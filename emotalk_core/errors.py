"""The project's exceptions. Each is raised once where the problem is found and reported once at
the edge (command line, stdio server, add-on operator). Every message names the problem and what
to do. `report_error` is every command line's report of one: one line on stderr and `EXIT_ERROR`.

Each error has a `kind` from the closed set `KINDS`: what it is about, so that each front end can
give its own advice (the add-on names its preferences, the command line its flags). The stdio
server sends it as `error.data.kind` (docs/protocol.md). `message` says what is wrong and `detail`
what to do, in words that hold for every front end; `cli_hint`, where given, is the command
line's own wording of `detail` (its flags).
"""

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

# What an error is about (`error.data.kind` on the wire). A closed set: clients key their advice
# on it, so a new value is a protocol change (docs/protocol.md lists them).
KIND_AUDIO = "audio"  # an audio file that is missing, unreadable or empty
KIND_MODEL = "model"  # a model folder that is missing or invalid
KIND_DEVICE = "device"  # an unknown device, or CUDA asked for where there is none
KIND_MEMORY = "memory"  # out of host or GPU memory
KIND_CONTROLS = "controls"  # controls or request values out of range
KIND_OUTPUT = "output"  # an output file that cannot be written
KIND_CANCELLED = "cancelled"  # the client cancelled, or the server is stopping
KIND_DEPENDENCY = "dependency"  # a module the backend needs is missing from its Python
KIND_PROTOCOL = "protocol"  # a malformed or out-of-order message, mismatched versions
KIND_INTERNAL = "internal"  # a bug: the backend's log has the traceback
KINDS = (KIND_AUDIO, KIND_MODEL, KIND_DEVICE, KIND_MEMORY, KIND_CONTROLS, KIND_OUTPUT,
         KIND_CANCELLED, KIND_DEPENDENCY, KIND_PROTOCOL, KIND_INTERNAL)


class EmoTalkError(Exception):
    """Base class. `code` is the JSON-RPC error code the stdio server reports for it, `kind`
    one of `KINDS`."""

    code = INTERNAL_ERROR
    kind = KIND_INTERNAL

    def __init__(self, message: str, detail: str | None = None, cli_hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail or message
        self.cli_hint = cli_hint

    def __str__(self) -> str:
        return self.message


class AudioError(EmoTalkError):
    """Audio that cannot be read, is empty, or holds invalid samples."""

    code = AUDIO_ERROR
    kind = KIND_AUDIO


class ModelError(EmoTalkError):
    """A model folder or checkpoint that is missing, corrupt or does not fit the network."""

    code = MODEL_ERROR
    kind = KIND_MODEL


class ResourceError(EmoTalkError):
    """Out of memory (host or device)."""

    code = OUT_OF_MEMORY
    kind = KIND_MEMORY


class ControlError(EmoTalkError):
    """Invalid controls or request parameters (unknown preset, person out of range, bad window)."""

    code = INVALID_PARAMS
    kind = KIND_CONTROLS


class DeviceError(ControlError):
    """A device that is unknown or not there (CUDA asked for on a machine without a GPU)."""

    kind = KIND_DEVICE


class OutputError(EmoTalkError):
    """An output file that cannot be written (missing folder, unknown extension)."""

    code = INVALID_PARAMS
    kind = KIND_OUTPUT


class DependencyError(EmoTalkError):
    """A module the backend needs is not installed in its Python."""

    kind = KIND_DEPENDENCY


class Cancelled(EmoTalkError):
    """The caller cancelled the work. The one message, which docs/protocol.md quotes for a
    `$/cancelRequest`, whichever layer notices the cancel first."""

    code = REQUEST_CANCELLED
    kind = KIND_CANCELLED

    def __init__(self, message: str = "cancelled by the client", detail: str | None = None):
        super().__init__(message, detail)


def report_error(exc: EmoTalkError, program: str) -> int:
    """Print `PROGRAM: error: MESSAGE (HINT)` on stderr (the hint only where the error has one
    beyond its message; the command line's own wording where it has one) and return
    `EXIT_ERROR` for the caller to exit with."""
    advice = exc.cli_hint or exc.detail
    hint = f" ({advice})" if advice and advice != exc.message else ""
    print(f"{program}: error: {exc.message}{hint}", file=sys.stderr)
    return EXIT_ERROR
