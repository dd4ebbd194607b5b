"""The distribution: the wheel alone carries our code, the default model and its data, and
works outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import speechlike

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True)
    (found,) = out.glob("emotalk_blender-*.whl")
    return found


def test_the_wheel_carries_the_model_the_configs_and_the_headless_bake(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("emotalk_core/weights/default/model.safetensors",
                   "emotalk_core/weights/default/presets.safetensors",
                   "emotalk_core/weights/default/config.json",
                   "emotalk_core/data/demo/arctic_a0007.txt",
                   "training/configs/compact.toml",
                   "blender_addon/headless/bake.py"):
        assert needed in names, needed


@pytest.mark.slow
def test_the_installed_wheel_predicts_with_the_default_model(wheel, tmp_path):
    """pip installs the wheel into a fresh venv, which runs `emotalk predict --model default`
    from a folder outside the repository. The third-party dependencies (torch, transformers,
    ...) come from this interpreter's site-packages through a .pth file, so the test needs no
    network; that folder holds no emotalk_core of its own (the repository's is an editable
    install, whose finder a .pth-added folder does not run), which the test checks."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    sf.write(work / "line.wav", speechlike(2.0, seed=3), 16000)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EMOTALK_MODEL")}
    where = subprocess.run([str(python), "-c", "import emotalk_core; print(emotalk_core.__file__)"],
                           cwd=work, env=env, check=True, capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    run = subprocess.run([str(venv / "bin" / "emotalk"), "predict", "line.wav", "--model",
                          "default", "--device", "cpu", "-o", "line.npy"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    curves = np.load(work / "line.npy")
    assert curves.shape == (60, 52) and np.all(np.isfinite(curves))
    assert curves[:, 24].max() > 0.05  # jawOpen moves: a real model ran
