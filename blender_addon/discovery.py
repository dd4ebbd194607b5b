"""Which Python runs the backend when the user named none, and where it was found.

bpy-free. Every function takes the platform ("nt", "posix" or "darwin") and, where it looks at
fixed places, a filesystem root, so the tests run the Windows and macOS layouts on fake folders.
The order, first found wins: EMOTALK_PYTHON, the Backend Python preference, the private
environment that Set up backend made, an `emotalk` command on PATH (pipx, uv tool), the
repository's .venv when the add-on runs from a checkout, and last Blender's own Python, which has
no torch (its `source` says so, and what to press).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SOURCE_ENV = "EMOTALK_PYTHON"
SOURCE_PREFERENCE = "Backend Python preference"
SOURCE_PRIVATE = "private environment (Set up backend)"
SOURCE_PATH = "emotalk on PATH (pipx/uv tool)"
SOURCE_REPO = "repository .venv"
SOURCE_BLENDER = "Blender's own Python (no torch: press Set up backend)"

ENV_FOLDER = "env"  # the private environment inside the extension's "backend" user folder


@dataclass(frozen=True)
class Found:
    """An interpreter and the words for where it came from (shown by the preferences)."""

    python: str
    source: str


def current_platform() -> str:
    """"nt", "darwin" or "posix": macOS differs from other POSIX systems in where its
    Pythons live, not in a venv's layout."""
    if os.name == "nt":
        return "nt"
    return "darwin" if sys.platform == "darwin" else "posix"


def env_python(env: Path, platform: str) -> Path:
    """The interpreter of the virtual environment `env`."""
    if platform == "nt":
        return env / "Scripts" / "python.exe"
    return env / "bin" / "python"


def private_env(backend_folder: Path) -> Path:
    return backend_folder / ENV_FOLDER


def is_file(path: Path) -> bool:
    try:  # is_file() raises for some names (too long, permission denied)
        return path.is_file()
    except (OSError, ValueError):
        return False


def is_executable(path: Path, platform: str) -> bool:
    """A file the shell would run: Windows has no executable bit."""
    return is_file(path) and (platform == "nt" or os.access(path, os.X_OK))


def which(name: str, path_env: str, platform: str) -> Path | None:
    """The first `name` on `path_env` (PATH's value; ';'-separated on Windows, where
    `name`.exe is looked for too)."""
    names = [name + ".exe", name] if platform == "nt" else [name]
    for folder in path_env.split(";" if platform == "nt" else ":"):
        if not folder.strip():
            continue
        for candidate in names:
            path = Path(folder.strip().strip('"')) / candidate
            if is_executable(path, platform):
                return path
    return None


# pip's launcher for paths too long for the kernel's shebang: `#!/bin/sh` then
# `'''exec' "/path/to/python" "$0" "$@"`.
_SH_EXEC = re.compile(r"""^'''exec'\s+("([^"]+)"|(\S+))""")
# The shebang a Windows console-script launcher (distlib's) carries before its zip.
_EXE_SHEBANG = re.compile(rb'#!"?([^"\r\n]*?pythonw?(?:\.exe)?)"?\r?\n')


def script_python(script: Path, path_env: str, platform: str) -> Path | None:
    """The interpreter a console script (`emotalk`) runs with: its shebang line, pip's
    `/bin/sh` trampoline for long paths, or `#!/usr/bin/env python3` looked up on PATH; for a
    Windows `emotalk.exe`, the `python.exe` beside it (a venv's Scripts folder), else the one its
    launcher names."""
    if platform == "nt" or script.suffix.lower() == ".exe":
        beside = script.with_name("python.exe")
        if is_executable(beside, platform):
            return beside
        try:
            data = script.read_bytes()
        except OSError:
            return None
        found = _EXE_SHEBANG.findall(data)
        return Path(found[-1].decode("utf-8", "replace")) if found else None
    try:
        with script.open("rb") as handle:
            head = handle.read(4096).decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    if not head or not head[0].startswith("#!"):
        return None
    words = head[0][2:].split()
    if not words:
        return None
    if words[0] == "/bin/sh" and len(head) > 1:
        match = _SH_EXEC.match(head[1])
        return Path(match[2] or match[3]) if match else None
    if Path(words[0]).name == "env" and len(words) > 1:
        return which(words[-1], path_env, platform)
    return Path(words[0])


def path_python(path_env: str, platform: str) -> Path | None:
    """The interpreter of an `emotalk` command on PATH (pipx, uv tool, pip install --user)."""
    script = which("emotalk", path_env, platform)
    if script is None:
        return None
    python = script_python(script, path_env, platform)
    return python if python is not None and is_executable(python, platform) else None


def discover(*, env: Mapping[str, str], preference: str, backend_folder: Path | None,
             repos: Iterable[Path], platform: str, fallback: str) -> Found:
    """The interpreter to run, in the module docstring's order; `fallback` (Blender's own
    sys.executable) when nothing else is there."""
    chosen = env.get(SOURCE_ENV, "").strip()
    if chosen:
        return Found(os.path.expanduser(chosen), SOURCE_ENV)
    if (preference or "").strip():
        return Found(os.path.expanduser(preference.strip()), SOURCE_PREFERENCE)
    if backend_folder is not None:
        private = env_python(private_env(backend_folder), platform)
        if is_file(private):
            return Found(str(private), SOURCE_PRIVATE)
    on_path = path_python(env.get("PATH", ""), platform)
    if on_path is not None:
        return Found(str(on_path), SOURCE_PATH)
    for repo in repos:
        candidate = env_python(repo / ".venv", platform)
        if is_file(candidate):
            return Found(str(candidate), SOURCE_REPO)
    return Found(fallback, SOURCE_BLENDER)


# -- a Python to build the private environment with -----------------------------------------------
BASE_VERSION = "3.11"  # the Python torch==2.13.0's wheels are made for here


def base_python_candidates(path_env: str, platform: str, root: Path,
                           home: Path) -> list[Path]:
    """Pythons that can make the private environment, best first: python3.11 on PATH, then the
    places installers put it that an app started from the Finder or the Start menu does not have
    on PATH (python.org's framework and Homebrew on macOS, the py launcher's folders on
    Windows), then any python3 on PATH. Blender's own Python comes after these (the caller's
    sys.executable)."""
    found: list[Path] = []

    def add(path: Path | None) -> None:
        if path is not None and is_executable(path, platform) and path not in found:
            found.append(path)

    if platform == "nt":
        add(which(f"python{BASE_VERSION}", path_env, platform))
        compact = BASE_VERSION.replace(".", "")
        add(home / "AppData" / "Local" / "Programs" / "Python" / f"Python{compact}" / "python.exe")
        add(root / "Program Files" / f"Python{compact}" / "python.exe")
        add(which("python", path_env, platform))
        return found
    add(which(f"python{BASE_VERSION}", path_env, platform))
    if platform == "darwin":
        add(root / "Library" / "Frameworks" / "Python.framework" / "Versions" / BASE_VERSION
            / "bin" / f"python{BASE_VERSION}")
        for prefix in ("opt/homebrew", "usr/local"):
            add(root / prefix / "bin" / f"python{BASE_VERSION}")
    else:
        add(root / "usr" / "bin" / f"python{BASE_VERSION}")
        add(root / "usr" / "local" / "bin" / f"python{BASE_VERSION}")
    add(which("python3", path_env, platform))
    return found
