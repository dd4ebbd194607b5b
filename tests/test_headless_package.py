"""blender_addon/headless/: the bpy-module side of `emotalk bake` and `emotalk demo`. It lives
in the add-on's tree but is no part of the extension, and the CLI reaches it without bpy."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_extension_zip_leaves_headless_out(tmp_path, capsys):
    import build_addon

    assert "headless" in build_addon.NOT_SHIPPED and (ROOT / "blender_addon" / "headless").is_dir()
    with zipfile.ZipFile(build_addon.build(tmp_path)) as archive:
        names = archive.namelist()
    assert "operators.py" in [Path(n).name for n in names]  # the add-on itself is there
    assert [n for n in names if "headless" in n] == []


def test_the_cli_and_the_headless_modules_import_without_bpy():
    code = ("import sys, emotalk_core.cli, blender_addon.headless.bake, "
            "blender_addon.headless.demo, blender_addon.headless.head; "
            "print('bpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
