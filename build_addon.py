#!/usr/bin/env python3
"""Build the Blender extension zip: `python build_addon.py [--out DIR]`.

The zip holds blender_addon/* plus verbatim copies of the emotalk_core modules in `SHARED` (the
add-on imports them as `from . import protocol, client, controls, arkit`; the repository keeps
one original of each). The version is emotalk_core.__version__, written into the zip's
blender_manifest.toml and build_info.json. When the bpy module is installed, Blender's own
extension tool (`addons_core/bl_pkg/cli/blender_ext.py`, no Blender binary needed) builds and
validates the package; otherwise the zip is written with zipfile. The zip's path is the LAST
line printed. blender_addon/headless/ is not shipped (NOT_SHIPPED).

`--wheel PATH` (a wheel, or the folder `make dist` wrote it to) puts our wheel into the zip's
wheels/ folder, from which the preferences' Set up backend installs emotalk into a private
environment. It is not listed in the manifest's `wheels`: Blender would install it into its own
Python, which has no torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON = ROOT / "blender_addon"
# Copied verbatim from emotalk_core/: the wire format and its client, the controls and the
# errors they raise, the channel names, the process check. Each imports only the standard
# library, numpy and the others in this list.
SHARED = ("protocol.py", "client.py", "controls.py", "errors.py", "arkit.py", "pids.py")
EXCLUDE = ("__pycache__", ".pyc", ".pyo")
# Folders of blender_addon/ that stay out of the zip. headless/ is the bpy-module side of
# `emotalk bake` and `emotalk demo`: it needs emotalk_core, which Blender's Python lacks.
NOT_SHIPPED = ("headless", "__pycache__")


def version() -> str:
    """emotalk_core.__version__, read without importing the package (no torch needed)."""
    text = (ROOT / "emotalk_core" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if not match:
        sys.exit("build_addon: no __version__ in emotalk_core/__init__.py")
    return match.group(1)


WHEELS_DIR = "wheels"  # blender_addon/setup.py's WHEELS_DIR


def find_wheel(path: Path, ver: str) -> Path:
    """`path` itself, or the wheel of version `ver` in the folder `path`."""
    if path.is_dir():
        path = path / f"emotalk_blender-{ver}-py3-none-any.whl"
    if not path.is_file():
        sys.exit(f"build_addon: no wheel at {path}: build it first (make dist, or pip wheel "
                 "--no-deps --no-build-isolation -w dist .)")
    if not path.name.startswith(f"emotalk_blender-{ver}-"):
        sys.exit(f"build_addon: {path.name} is not the wheel of version {ver}: rebuild it")
    return path


def stage(dest: Path, ver: str, wheel: Path | None = None) -> Path:
    """Copy the add-on's files into `dest`/emotalk with the version filled in, and `wheel`
    into its wheels/ folder."""
    out = dest / "emotalk"
    out.mkdir(parents=True)
    for path in sorted(ADDON.iterdir()):
        if path.name in NOT_SHIPPED:
            continue
        if path.is_dir():
            sys.exit(f"build_addon: blender_addon/{path.name}/ is a folder; copy it into the "
                     "zip here, or add it to NOT_SHIPPED")
        if not path.name.endswith(EXCLUDE):
            shutil.copy2(path, out / path.name)
    for name in SHARED:
        if (ADDON / name).exists():
            sys.exit(f"build_addon: blender_addon/{name} must not exist; the original is "
                     f"emotalk_core/{name}")
        shutil.copy2(ROOT / "emotalk_core" / name, out / name)
    manifest = out / "blender_manifest.toml"
    text, count = re.subn(r'^version\s*=\s*"[^"]*"', f'version = "{ver}"',
                          manifest.read_text(encoding="utf-8"), count=1, flags=re.MULTILINE)
    if count != 1:
        sys.exit("build_addon: blender_manifest.toml has no version line")
    manifest.write_text(text, encoding="utf-8")
    if wheel is not None:
        (out / WHEELS_DIR).mkdir()
        shutil.copy2(wheel, out / WHEELS_DIR / wheel.name)
    info = {"version": ver, "source_repo": str(ROOT)}
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out


def blender_ext() -> Path | None:
    """Blender's extension command-line tool inside the installed bpy module, if any."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        found = sorted(Path(base).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if found:
            return found[-1]
    return None


def run_tool(tool: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"build_addon: blender_ext {args[0]} failed:\n{proc.stdout}{proc.stderr}")
    print(proc.stdout.strip() or f"blender_ext {args[0]}: ok")


def write_zip(source: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(source).as_posix())


def build(out_dir: Path, wheel: Path | None = None) -> Path:
    ver = version()
    wheel = find_wheel(wheel, ver) if wheel is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"emotalk-{ver}.zip"
    target.unlink(missing_ok=True)
    tool = blender_ext()
    with tempfile.TemporaryDirectory(prefix="emotalk-addon-") as tmp:
        source = stage(Path(tmp), ver, wheel)
        if tool is None:
            print("bpy is not installed: zip written without Blender's validator")
            write_zip(source, target)
        else:
            run_tool(tool, "build", "--source-dir", str(source), "--output-filepath", str(target))
    if tool is not None:
        run_tool(tool, "validate", str(target))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist",
                        help="output folder (default: dist/)")
    parser.add_argument("--wheel", type=Path, default=None,
                        help="our wheel, or the folder holding it, to put into the zip for Set "
                             "up backend")
    args = parser.parse_args(argv)
    print(build(args.out.resolve(), args.wheel.resolve() if args.wheel else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
