"""The backend's interpreter for tests that run where torch is missing.

The newest bpy needs a Python with no torch wheel here (3.13), so the add-on's tests run there the
way a real Blender does: emotalk_core lives in another interpreter, started as a subprocess. This
module says which one (EMOTALK_TEST_BACKEND_PYTHON, else this interpreter when it has torch,
else the repository's .venv) and computes there what needs torch: the tiny model folder and
Predictor's reference curves, handed back as files so that the numbers are the same bits.

Run as `python -m tests.backend_python tiny-model OUT` or `... predict ...` in that interpreter.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV_BACKEND = "EMOTALK_TEST_BACKEND_PYTHON"
# find_spec does not import torch: this module is imported by every test session.
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def backend_python() -> str:
    """The interpreter with emotalk_core and torch that EMOTALK_PYTHON should name."""
    chosen = os.environ.get(ENV_BACKEND, "").strip()
    if chosen:
        return chosen
    if HAVE_TORCH:
        return sys.executable
    return str(ROOT / ".venv" / "bin" / "python")


def run_backend(*args: str) -> None:
    """`python -m tests.backend_python ARGS` in the backend's interpreter; raises on failure."""
    python = backend_python()
    if not Path(python).is_file():
        raise RuntimeError(f"no backend interpreter at {python}: run `make setup`, or set "
                           f"{ENV_BACKEND} to a Python with emotalk_core and torch")
    proc = subprocess.run([python, "-m", "tests.backend_python", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{python} -m tests.backend_python {' '.join(args)} failed "
                           f"({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def tiny_model(out: Path) -> Path:
    """The saved tiny model (tests.conftest.save_tiny_model), here or in the backend."""
    if HAVE_TORCH:
        from tests.conftest import save_tiny_model

        return save_tiny_model(out)
    run_backend("tiny-model", str(out))
    return out


def predict(model: Path, clip: str | Path, start: float, end: float, fps: float,
            controls: dict | None = None) -> np.ndarray:
    """Predictor(model).predict(...).values with `controls` (their JSON form; None: the
    defaults), here or in the backend."""
    if HAVE_TORCH:
        return _predict_here(Path(model), str(clip), start, end, fps, controls)
    with tempfile.TemporaryDirectory(prefix="emotalk-test-predict-") as tmp:
        out = Path(tmp) / "values.npy"
        extra = ["--controls", json.dumps(controls)] if controls is not None else []
        run_backend("predict", str(model), str(clip), repr(start), repr(end), repr(fps),
                    str(out), *extra)
        return np.load(out)


def _predict_here(model: Path, clip: str, start: float, end: float, fps: float,
                  controls: dict | None = None) -> np.ndarray:
    from emotalk_core.controls import Controls
    from emotalk_core.inference import Predictor

    predictor = Predictor(model, device="cpu")
    return predictor.predict(clip, start=start, end=end, fps=fps,
                             controls=Controls.from_dict(controls)).values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="torch-side helpers for the bpy tests")
    commands = parser.add_subparsers(dest="command", required=True)
    tiny = commands.add_parser("tiny-model")
    tiny.add_argument("out", type=Path)
    pred = commands.add_parser("predict")
    pred.add_argument("model", type=Path)
    pred.add_argument("clip")
    # repr() of a float reads back as the same float: the windows match the in-process ones.
    for name in ("start", "end", "fps"):
        pred.add_argument(name, type=float)
    pred.add_argument("out", type=Path)
    pred.add_argument("--controls", type=json.loads, default=None, help="their JSON form")
    args = parser.parse_args(argv)
    if args.command == "tiny-model":
        from tests.conftest import save_tiny_model

        save_tiny_model(args.out)
    else:
        values = _predict_here(args.model, args.clip, args.start, args.end, args.fps,
                               args.controls)
        np.save(args.out, values)
    return 0


if __name__ == "__main__":
    sys.exit(main())
