"""The project's exceptions. Each is raised once where the problem is found and reported once at
the edge (CLI, stdio server, add-on operator). Every message names the problem and what to do."""

from __future__ import annotations


class EmoTalkError(Exception):
    """Base class. `code` is the JSON-RPC error code the stdio server reports for it."""

    code = -32603

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail or message

    def __str__(self) -> str:
        return self.message


class AudioError(EmoTalkError):
    """Audio that cannot be read, is empty, or holds invalid samples."""

    code = -32001


class ModelError(EmoTalkError):
    """A model folder or checkpoint that is missing, corrupt or does not fit the network."""

    code = -32002


class ResourceError(EmoTalkError):
    """Out of memory (host or device)."""

    code = -32003


class ControlError(EmoTalkError):
    """Invalid controls or request parameters (unknown preset, person out of range, bad window)."""

    code = -32602


class OutputError(EmoTalkError):
    """An output file that cannot be written (missing folder, unknown extension)."""

    code = -32602


class Cancelled(EmoTalkError):
    """The caller cancelled the work. The one message, which docs/protocol.md quotes for a
    `$/cancelRequest`, whichever layer notices the cancel first."""

    code = -32800

    def __init__(self, message: str = "cancelled by the client", detail: str | None = None):
        super().__init__(message, detail)
