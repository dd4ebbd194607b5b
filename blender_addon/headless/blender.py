"""bpy and the installed add-on for headless work: a private Blender configuration, the
extension installed from its zip, Blender's output kept off the terminal, and the operators
that open and save files.

bpy is imported inside `load_bpy` only, so this module imports where bpy is missing and says
what to install when it is needed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import importlib.util
import io
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emotalk_core.errors import EmoTalkError
from emotalk_core.files import atomic_path, probe, require_file, shown

ADDON_NAME = "emotalk"  # the extension id; enabled as "bl_ext.<repo>.emotalk"
OPERATOR_CLASS = "EMOTALK_OT_animate_from_audio"
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "build_addon.py"


class SceneError(EmoTalkError):
    """A .blend that cannot be baked as asked: unreadable, no target, no strips, a failed bake."""


class SetupError(EmoTalkError):
    """bpy or the add-on is not available, so no file can be baked."""


def load_bpy(user_resources: Path | None = None):
    """The bpy module. A first import gets a private BLENDER_USER_RESOURCES (`user_resources`,
    owned by the caller, else a temporary folder removed at exit), so the extension installed
    for the bake never touches the user's own Blender configuration."""
    if "bpy" not in sys.modules:
        if importlib.util.find_spec("bpy") is None:
            raise SetupError(
                f"the bpy module is not installed in {sys.executable}",
                "pip install 'emotalk-blender[blender]' (bpy 5.0.1, Python 3.11), or run the "
                "add-on inside Blender: blender -b FILE.blend --python-expr "
                "\"import bpy; bpy.ops.emotalk.animate_from_audio()\"")
        if user_resources is None:
            user_resources = Path(tempfile.mkdtemp(prefix="emotalk-blender-user-"))
            atexit.register(shutil.rmtree, user_resources, ignore_errors=True)
        os.environ["BLENDER_USER_RESOURCES"] = str(user_resources)
    import bpy

    return bpy


def enabled_addon(bpy) -> str | None:
    """The module name of an enabled EmoTalk add-on whose operator is registered, if any."""
    if not hasattr(bpy.types, OPERATOR_CLASS):
        return None
    for addon in bpy.context.preferences.addons:
        if addon.module == ADDON_NAME or addon.module.endswith("." + ADDON_NAME):
            return addon.module
    return None


def ensure_addon(bpy, zip_path: Path | None = None) -> str:
    """The enabled add-on's module name, installing the extension zip first when needed (the
    zip given, else one built from the source tree by build_addon.py)."""
    found = enabled_addon(bpy)
    if found:
        return found
    with tempfile.TemporaryDirectory(prefix="emotalk-addon-") as tmp:
        path = zip_path or build_addon_zip(Path(tmp))
        if probe(path, "add-on zip", SetupError) is None:
            raise SetupError(f"add-on zip not found: {shown(path)}")
        require_file(path, "add-on zip", SetupError, "pass the zip made by build_addon.py")
        try:
            with blender_output([]):
                bpy.ops.extensions.package_install_files(
                    filepath=str(path), repo="user_default", enable_on_install=True)
        except RuntimeError as exc:
            raise SetupError(f"cannot install the add-on {path}: {operator_message(exc)}") \
                from exc
    found = enabled_addon(bpy)
    if not found:
        raise SetupError(f"installed {path}, but the EmoTalk add-on did not register")
    return found


def build_addon_zip(out_dir: Path) -> Path:
    """Build the extension zip with the repository's build_addon.py (quietly)."""
    if not BUILD_SCRIPT.is_file():
        raise SetupError("build_addon.py is not beside the add-on's sources (an installed "
                         "wheel?)", "pass --addon emotalk-<version>.zip (made by build_addon.py)")
    spec = importlib.util.spec_from_file_location("_emotalk_build_addon", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            spec.loader.exec_module(module)
            return Path(module.build(out_dir))
    except SystemExit as exc:  # build_addon reports its failures with sys.exit(message)
        raise SetupError(f"cannot build the add-on: {exc.code}") from exc


def addon_module(addon: str, name: str):
    """One of the installed add-on's own modules (strips, operators, backend, ...): the copy
    Blender registered, not this source tree's."""
    return sys.modules.get(f"{addon}.{name}") or importlib.import_module(f"{addon}.{name}")


def operator_message(report: RuntimeError | str) -> str:
    """An operator's error (a failed `bpy.ops` call, or the text it reported) as one line,
    without Blender's prefixes."""
    text = re.sub(r"^Operator bpy\.ops\.[\w.]+\.poll\(\)\s*", "", str(report).strip())
    lines = [re.sub(r"^(Error|Warning):\s*", "", line).strip() for line in text.splitlines()]
    return "; ".join(line for line in lines if line) or "failed"


@contextlib.contextmanager
def blender_output(sink: list[str]) -> Iterator[None]:
    """Keep what Blender prints off the terminal while it works, so the one progress bar stays
    readable; the text is appended to `sink` (shown with --verbose). Blender writes its log on
    file descriptor 1 (C stdio: "Read blend" lines) and the operators' reports through
    Python's sys.stdout, which is not fd 1 when the caller has replaced it (pytest's capture,
    an embedding program), so both are captured."""
    with contextlib.suppress(ValueError, OSError):
        sys.stdout.flush()
    _flush_c_stdio()
    saved = os.dup(1)
    reports = io.StringIO()
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        try:
            with contextlib.redirect_stdout(reports):
                yield
        finally:
            _flush_c_stdio()
            os.dup2(saved, 1)
            os.close(saved)
            capture.seek(0)
            sink.append(capture.read().decode("utf-8", errors="replace") + reports.getvalue())


def _flush_c_stdio() -> None:
    with contextlib.suppress(Exception):  # no C library handle (Windows): Blender flushes itself
        ctypes.CDLL(None).fflush(None)


def run_operator(op, log: list[str], prefix: str = "", **kwargs: Any) -> None:
    """Call an operator; an error report (bpy raises it as RuntimeError), a failed poll or a
    cancel is a SceneError."""
    try:
        with blender_output(log):
            result = op(**kwargs)
    except RuntimeError as exc:
        raise SceneError(prefix + operator_message(exc)) from exc
    if "FINISHED" not in result:
        raise SceneError(prefix + f"{op.idname_py()} was cancelled")


def open_blend(bpy, path: Path, log: list[str]) -> None:
    if probe(path, ".blend file", SceneError) is None:
        raise SceneError(f"file not found: {shown(path)}")
    require_file(path, ".blend file", SceneError, "choose a .blend file")
    try:
        with blender_output(log):
            bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False, use_scripts=False)
    except RuntimeError as exc:
        raise SceneError(f"cannot open {path.name}: {operator_message(exc)}") from exc


def save_atomic(bpy, target: Path, log: list[str]) -> None:
    """Write the open file to `target` through a partial file in the same folder
    (`files.atomic_path`: synced, given the old file's permissions, then renamed; one a killed
    bake left there is removed): the target is either the old file or the complete new one.
    Relative paths are remapped to the target's folder."""
    with atomic_path(target, extension=".blend", error=SceneError) as temp:
        try:
            with blender_output(log):
                bpy.ops.wm.save_as_mainfile(filepath=str(temp), copy=True,
                                            check_existing=False, relative_remap=True)
        except RuntimeError as exc:
            raise SceneError(f"cannot save {target}: {operator_message(exc)}") from exc
        finally:
            for leftover in (temp.with_name(temp.name + "1"), Path(f"{temp}@")):
                with contextlib.suppress(OSError):  # Blender's backup and temporary copies
                    leftover.unlink()
