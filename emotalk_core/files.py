"""Checked file-system access shared by every reader and writer in emotalk_core.

- `probe` / `require_file` / `require_folder`: what is at a path, with the operating system's
  own reason when it cannot be looked at (permission denied, a name too long, a loop of symbolic
  links). `Path.is_dir()` raises for some of these and answers False for others, which reads as
  "does not exist"; a FIFO or a device passes `exists()` and then blocks or misleads a reader.
- `refuse_inputs`: the one guard of every writer: an output never replaces one of its inputs.
- Partial files: every writer writes `.<name>.<host>-<pid>-<random>.emotalk-partial` beside
  its target and renames it over the target when complete. A writer killed by SIGKILL leaves
  it behind; `new_partial` removes such files of dead writers on this host when a process first
  writes into the same folder, so leftovers last only until the next run writes there.
- `atomic_write` / `atomic_path`: the one way every file is written. A crash, an exception or
  Ctrl-C leaves either the old file or the complete new one (synced to disk, with the old
  file's permissions or the usual ones for a new file), never a truncated file.
- `check_writable`: a folder that can take a file of a given size, checked before long work.
- `read_json`: a small JSON file, with every way it can fail as the caller's own error.

Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import EmoTalkError, OutputError
from .pids import alive

PARTIAL_SUFFIX = ".emotalk-partial"
SHOWN_PATH_CHARS = 160  # a path longer than this is shortened in messages
FREE_SPACE_MARGIN = 1 << 20  # bytes kept free beyond an output's estimated size


def shown(path: str | os.PathLike[str]) -> str:
    """A path for a one-line message: long ones keep their start and end."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if len(text) <= SHOWN_PATH_CHARS:
        return text
    half = SHOWN_PATH_CHARS // 2 - 2
    return f"{text[:half]}...{text[-half:]} ({len(text)} characters)"


def os_reason(exc: OSError) -> str:
    """The reason of an OS error in words a user acts on."""
    if exc.errno == errno.ELOOP:
        return "it is a loop of symbolic links"
    if exc.errno == errno.ENAMETOOLONG:
        return "the name is too long for the file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    return exc.strerror or str(exc)


# -- looking at paths ---------------------------------------------------------------------------
def probe(path: str | os.PathLike[str], what: str, error: type[EmoTalkError]
          ) -> os.stat_result | None:
    """The status of `path` (symbolic links followed), None when nothing is there. Any other
    failure is `error` naming `what` and the reason."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError as exc:  # an embedded NUL character
        raise error(f"{what} path {shown(path)!r} is not a valid path ({exc})") from exc
    except OSError as exc:
        raise error(f"cannot look at {what} {shown(path)}: {os_reason(exc)}") from exc


def kind(status: os.stat_result) -> str:
    """'a regular file', 'a folder', 'a FIFO (named pipe)', ... for messages."""
    mode = status.st_mode
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def require_file(path: str | os.PathLike[str], what: str, error: type[EmoTalkError],
                 hint: str = "check the path") -> os.stat_result:
    """The status of an existing regular file; anything else is `error`. A FIFO or a device
    is refused here because reading it would block or never end."""
    status = probe(path, what, error)
    if status is None:
        raise error(f"{what} {shown(path)} does not exist; {hint}")
    if not stat.S_ISREG(status.st_mode):
        raise error(f"{what} {shown(path)} is {kind(status)}, not a file; {hint}")
    return status


def require_folder(path: str | os.PathLike[str], what: str, error: type[EmoTalkError],
                   hint: str = "create it or choose another folder") -> None:
    status = probe(path, what, error)
    if status is None:
        raise error(f"{what} {shown(path)} does not exist; {hint}")
    if not stat.S_ISDIR(status.st_mode):
        raise error(f"{what} {shown(path)} is {kind(status)}, not a folder; {hint}")


def read_json(path: str | os.PathLike[str], what: str, error: type[EmoTalkError],
              max_bytes: int, hint: str = "") -> Any:
    """The JSON value in a regular file of at most `max_bytes`. Unreadable, oversized, not
    UTF-8, not JSON or nested too deeply for the parser: all `error`, one line each."""
    status = require_file(path, what, error)
    tail = f"; {hint}" if hint else ""
    if status.st_size > max_bytes:
        raise error(f"{what} {shown(path)} is {status.st_size} bytes; a valid one is at most "
                    f"{max_bytes}{tail}")
    try:
        with open(path, "rb") as handle:
            text = handle.read(max_bytes + 1).decode("utf-8")
        return json.loads(text)
    except OSError as exc:
        raise error(f"cannot read {what} {shown(path)}: {os_reason(exc)}{tail}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{what} {shown(path)} is corrupt: not UTF-8 text (byte {exc.start})"
                    f"{tail}") from exc
    except RecursionError as exc:
        raise error(f"{what} {shown(path)} is corrupt: JSON nested too deeply to read"
                    f"{tail}") from exc
    except ValueError as exc:
        raise error(f"{what} {shown(path)} is corrupt: not valid JSON ({exc}){tail}") from exc


# -- outputs never replace inputs --------------------------------------------------------------
def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: the same resolved path (also when neither exists yet),
    or the same inode (hard links, bind mounts)."""
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        if Path(a).resolve() == Path(b).resolve():
            return True
    with contextlib.suppress(OSError, ValueError):
        return os.path.samefile(a, b)
    return False


def refuse_inputs(target: str | os.PathLike[str],
                  inputs: Iterable[str | os.PathLike[str] | None],
                  hint: str = "choose another output name",
                  error: type[EmoTalkError] = OutputError) -> None:
    """`error` when the output `target` is one of the `inputs` (None entries are skipped)."""
    for source in inputs:
        if source is not None and same_file(target, source):
            raise error(f"output {shown(target)} is the input file {shown(source)}; "
                        f"writing it would destroy the input; {hint}")


# -- partial files ------------------------------------------------------------------------------
def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[^.]+"
                      + re.escape(PARTIAL_SUFFIX) + r"(?:\.[A-Za-z0-9]+)?(?:1|@)?$")


def partial_pattern() -> re.Pattern[str]:
    """The names of partial files (Blender's own `@` and `1` siblings of a .blend included)."""
    return _PARTIAL


_cleaned: set[str] = set()  # folders already cleaned by this process
_cleaned_lock = threading.Lock()


def new_partial(target: Path, extension: str = "",
                error: type[EmoTalkError] = OutputError) -> tuple[int, Path]:
    """An open descriptor and the path of a new partial file beside `target` (same folder, so
    the final rename is atomic), after removing the partial files that dead writers left
    there. `extension` is kept at the end of the name (Blender saves only `.blend` names)."""
    _clean_once(target.parent)
    prefix = f".{target.name}.{_host_tag()}-{os.getpid()}-"
    try:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=PARTIAL_SUFFIX + extension,
                                    dir=target.parent)
    except OSError as exc:
        hint = ("choose a shorter name (the partial file adds about 40 characters)"
                if exc.errno == errno.ENAMETOOLONG else "check its permissions and free space")
        raise error(f"cannot write {shown(target)}: {os_reason(exc)}; {hint}") from exc
    return fd, Path(name)


def _clean_once(folder: Path) -> None:
    """Clean a folder on this process's first write there only: leftovers come from processes
    that have ended, and a writer of many files in one folder must not scan it every time."""
    key = os.path.abspath(folder)
    with _cleaned_lock:
        if key in _cleaned:
            return
        _cleaned.add(key)
    clean_stale_partials(folder)


def clean_stale_partials(folder: Path) -> list[Path]:
    """Remove the partial files in `folder` whose writer, a process on this host, has died.
    Those of live processes and of other hosts are kept. Returns the removed paths."""
    removed: list[Path] = []
    host = _host_tag()
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            found = _PARTIAL.match(entry.name)
            if found is None or found["host"] != host or alive(int(found["pid"])):
                continue
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def check_writable(target: Path, need_bytes: int = 0, extension: str = "",
                   error: type[EmoTalkError] = OutputError) -> None:
    """Fail before long work when the file `target` cannot be written with about
    `need_bytes`: its folder is missing, read-only, not ours to write or too full, or its name
    is too long. The partial file the writer will use is really created and removed, because
    permission bits say nothing about read-only mounts, ACLs or name limits."""
    folder = target.parent
    require_folder(folder, "output folder", error)
    probe(target, "output file", error)  # a name too long for the file system fails here
    fd, path = new_partial(target, extension, error)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)
    free = _free_bytes(folder)
    if free is not None and free < need_bytes + FREE_SPACE_MARGIN:
        raise error(f"folder {shown(folder)} has {_size(free)} free; the output needs about "
                    f"{_size(need_bytes)}; free some space or choose another folder")


def _free_bytes(folder: Path) -> int | None:
    try:
        status = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows): the write itself will tell
        return None
    return status.f_bavail * status.f_frsize


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


# -- atomic writes ------------------------------------------------------------------------------
def checked_target(path: str | os.PathLike[str],
                   inputs: Iterable[str | os.PathLike[str] | None] = (),
                   error: type[EmoTalkError] = OutputError) -> Path:
    """The output path, after checking that its folder exists, that it is not a folder itself
    and that it is none of the `inputs`."""
    target = Path(os.fspath(path))
    require_folder(target.parent, "output folder", error, "create it or choose another path")
    if os.path.isdir(target):
        raise error(f"cannot write {shown(target)}: it is a folder; choose a file name")
    refuse_inputs(target, inputs, error=error)
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, extension: str = "",
                inputs: Iterable[str | os.PathLike[str] | None] = (),
                error: type[EmoTalkError] = OutputError) -> Iterator[Path]:
    """The path of a partial file beside `path`, for writers that take a path (a library's
    save function, another program). When the block ends normally the partial file is synced,
    given its final permissions and renamed over `path`; on any exception, KeyboardInterrupt
    included, it is removed and a file already at `path` is left untouched. OS errors become
    `error`, and so does a `path` that is one of `inputs` (the files the output is made from).
    `extension` ends the partial file's name, for writers that choose a format by it."""
    target = checked_target(path, inputs, error)
    fd, partial = new_partial(target, extension, error)
    os.close(fd)
    try:
        yield partial
        _fsync_file(partial)
        os.chmod(partial, _final_mode(target))  # partial files are private (0600)
        os.replace(partial, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        if isinstance(exc, OSError):
            raise error(f"cannot write {shown(target)}: {exc.strerror or exc}; check free "
                        "space and permissions") from exc
        raise
    _fsync_folder(target.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", *, encoding: str = "utf-8",
                 inputs: Iterable[str | os.PathLike[str] | None] = (),
                 error: type[EmoTalkError] = OutputError) -> Iterator[IO[Any]]:
    """`atomic_path` with the partial file open: `mode` "wb", or "w" for text in `encoding`
    with no newline translation ("\\n" is written as is on every platform)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', not {mode!r}")
    text = {} if mode == "wb" else {"encoding": encoding, "newline": ""}
    with (
        atomic_path(path, inputs=inputs, error=error) as partial,
        open(partial, mode, **text) as handle,
    ):
        yield handle


def _fsync_file(path: Path) -> None:
    """Put the file's data on disk before the rename publishes it: after a power loss the
    target is then the old file or the complete new one, not an empty one."""
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _final_mode(target: Path) -> int:
    """Permissions for the new file: the old file's, else what open() would give (umask)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable where the platform allows syncing a directory (POSIX)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
