"""Which Python the add-on runs when the user named none (blender_addon/discovery.py), on fake
Linux, macOS and Windows layouts: folders with fake interpreters and console scripts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from blender_addon import backend, discovery
from blender_addon.discovery import (
    SOURCE_BLENDER,
    SOURCE_ENV,
    SOURCE_PATH,
    SOURCE_PREFERENCE,
    SOURCE_PRIVATE,
    SOURCE_REPO,
    discover,
)

BLENDER_PYTHON = "/blender/python/bin/python3.11"


def executable(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


class Layout:
    """A fake machine: a private environment, a pipx-installed `emotalk` and a checkout, each
    made on demand for one platform."""

    def __init__(self, root: Path, platform: str):
        self.root, self.platform = root, platform
        self.backend_folder = root / "extension-user" / "backend"
        self.repo = root / "checkout"
        self.bin = root / ("pipx-bin")
        self.sep = ";" if platform == "nt" else ":"

    def private(self) -> Path:
        env = discovery.private_env(self.backend_folder)
        return executable(discovery.env_python(env, self.platform))

    def pipx(self) -> Path:
        venv = self.root / "pipx" / "venvs" / "emotalk"
        python = executable(discovery.env_python(venv, self.platform))
        if self.platform == "nt":  # the launcher sits in the venv's Scripts folder
            executable(python.with_name("emotalk.exe"), "MZ launcher")
            self.bin = python.parent
        else:
            executable(self.bin / "emotalk", f"#!{python}\nimport sys\n")
        return python

    def checkout(self) -> Path:
        return executable(discovery.env_python(self.repo / ".venv", self.platform))

    def find(self, env: dict[str, str] | None = None, preference: str = "") -> discovery.Found:
        environ = {"PATH": self.sep.join([str(self.root / "empty"), str(self.bin)])}
        environ.update(env or {})
        return discover(env=environ, preference=preference, backend_folder=self.backend_folder,
                        repos=[self.repo], platform=self.platform, fallback=BLENDER_PYTHON)


@pytest.mark.parametrize("platform", ["posix", "darwin", "nt"])
def test_the_order_private_environment_then_path_then_checkout_then_blender(tmp_path, platform):
    layout = Layout(tmp_path, platform)
    assert layout.find() == discovery.Found(BLENDER_PYTHON, SOURCE_BLENDER)
    repo = layout.checkout()
    assert layout.find() == discovery.Found(str(repo), SOURCE_REPO)
    pipx = layout.pipx()
    assert layout.find() == discovery.Found(str(pipx), SOURCE_PATH)
    private = layout.private()
    assert layout.find() == discovery.Found(str(private), SOURCE_PRIVATE)
    assert layout.find(preference="/chosen/python") == discovery.Found("/chosen/python",
                                                                       SOURCE_PREFERENCE)
    assert layout.find({"EMOTALK_PYTHON": "/env/python"}, "/chosen/python") == discovery.Found(
        "/env/python", SOURCE_ENV)


@pytest.mark.parametrize("platform", ["posix", "darwin", "nt"])
def test_venv_layouts(tmp_path, platform):
    python = discovery.env_python(tmp_path / "env", platform)
    expected = ("Scripts", "python.exe") if platform == "nt" else ("bin", "python")
    assert python.parts[-2:] == expected


def test_a_launcher_for_long_paths_and_an_env_shebang_name_their_interpreter(tmp_path):
    long_python = executable(tmp_path / ("x" * 100) / "venv" / "bin" / "python")
    script = executable(tmp_path / "bin" / "emotalk",
                        f"#!/bin/sh\n'''exec' \"{long_python}\" \"$0\" \"$@\"\n' '''\n")
    assert discovery.path_python(str(script.parent), "posix") == long_python
    env_python = executable(tmp_path / "py" / "python3")
    executable(script, "#!/usr/bin/env python3\n")
    path = os.pathsep.join([str(script.parent), str(env_python.parent)])
    assert discovery.path_python(path, "posix") == env_python


def test_a_windows_launcher_elsewhere_names_its_interpreter_in_its_shebang(tmp_path):
    """pipx on Windows copies emotalk.exe to ~/.local/bin, away from the venv's python.exe: the
    launcher's embedded shebang names it."""
    python = executable(tmp_path / "venvs" / "emotalk" / "Scripts" / "python.exe")
    launcher = tmp_path / "local-bin" / "emotalk.exe"
    launcher.parent.mkdir()
    launcher.write_bytes(b"MZ\x90\x00binary" + f'#!"{python}"\r\n'.encode() + b"PK\x03\x04zip")
    assert discovery.path_python(str(launcher.parent), "nt") == python


def test_a_script_whose_interpreter_is_gone_is_not_a_backend(tmp_path):
    executable(tmp_path / "bin" / "emotalk", "#!/nowhere/python\n")
    executable(tmp_path / "bin" / "not-a-script", "no shebang")
    assert discovery.path_python(str(tmp_path / "bin"), "posix") is None


def test_a_file_on_path_that_cannot_run_is_skipped(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "emotalk").write_text("#!/usr/bin/python3\n")  # no executable bit
    assert discovery.which("emotalk", str(tmp_path / "bin"), "posix") is None


def test_macos_base_pythons_outside_the_finder_path(tmp_path):
    """Blender started from the Finder has PATH=/usr/bin:/bin: python.org's framework and
    Homebrew's Python are looked for where they install."""
    framework = executable(tmp_path / "Library/Frameworks/Python.framework/Versions/3.11/bin/"
                                      "python3.11")
    brew = executable(tmp_path / "opt/homebrew/bin/python3.11")
    on_path = executable(tmp_path / "path-bin" / "python3.11")
    found = discovery.base_python_candidates(str(on_path.parent), "darwin", tmp_path,
                                             tmp_path / "home")
    assert found == [on_path, framework, brew]


def test_windows_base_pythons(tmp_path):
    user = executable(tmp_path / "home/AppData/Local/Programs/Python/Python311/python.exe")
    found = discovery.base_python_candidates("", "nt", tmp_path, tmp_path / "home")
    assert found == [user]


def test_backend_resolve_python_reads_the_private_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(backend.ENV_PYTHON, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.setattr(backend, "repo_candidates", lambda: [])
    folder = tmp_path / "backend"
    assert backend.discover_python("", folder).source == SOURCE_BLENDER
    private = executable(discovery.env_python(discovery.private_env(folder),
                                              discovery.current_platform()))
    assert backend.discover_python("", folder) == discovery.Found(str(private), SOURCE_PRIVATE)
    assert backend.resolve_settings("", "", "auto", folder).python == str(private)
