"""A Python without torch, for the tests of what a user sees when the backend's interpreter lacks
it: `python tests/no_torch.py -m emotalk_core serve` runs the module as `-m` would, with every
import of torch failing as it does where torch is not installed.

`no_torch_python(folder, python)` writes an executable that runs this with `python`, for
settings that take an interpreter (EMOTALK_PYTHON, the add-on's Backend Python).
"""

from __future__ import annotations

import importlib.abc
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class NoTorch(importlib.abc.MetaPathFinder):
    """Refuses torch the way a missing package is refused: ModuleNotFoundError naming it."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def no_torch_python(folder: Path, python: str) -> Path:
    """An executable in `folder` that behaves as `python` without torch."""
    wrapper = folder / "python-without-torch"
    wrapper.write_text(f'#!/bin/sh\nexec "{python}" "{Path(__file__).resolve()}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def main(argv: Sequence[str]) -> None:
    module, rest = (argv[1], argv[2:]) if argv[:1] == ["-m"] else ("emotalk_core", argv)
    sys.path.insert(0, str(ROOT))  # emotalk_core from this checkout wherever it is installed
    sys.meta_path.insert(0, NoTorch())
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
