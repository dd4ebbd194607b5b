"""Set up backend: a private Python environment with torch and emotalk, made from the add-on's
preferences without a terminal.

bpy-free: the operator passes in the extension's user folder ("backend"), the base Python and
the choices, and polls a `SetupJob` from a Blender timer, as the bake does. The steps are: make a
venv, pip-install torch, pip-install our wheel (carried in the zip's wheels/ folder) with its
dependencies, and check that the environment imports both. Everything is built in
`backend/env.building` and renamed to `backend/env` (where discovery looks) only when the check
passes, so a cancelled or failed set-up leaves nothing half-made in use; the next Set up
resumes from the building folder, and a Repair moves the working environment there and back.
pip's output goes to `backend/setup.log`, which every failure names.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import discovery

TORCH_VERSION = "2.13.0"  # the torch emotalk_core is tested with (pyproject.toml pins it)
# PyTorch's own indexes: their local versions (2.13.0+cpu, +cu128) sort above PyPI's, so pip
# takes the CPU build (small; PyPI's Linux torch bundles CUDA) or the CUDA one (Windows' PyPI
# torch is CPU-only). macOS wheels on PyPI are the only build there.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
BUILDING = "env.building"
VENV_MADE = ".emotalk-venv-made"  # in the building folder once its venv step has succeeded
LOG_NAME = "setup.log"
WHEELS_DIR = "wheels"  # in the zip, beside this file
PACKAGE = "emotalk_blender"
# Share of the progress bar per step: torch is the big download.
WEIGHTS = {"venv": 0.05, "torch": 0.6, "package": 0.3, "check": 0.05}
LABELS = {"venv": "making the environment", "torch": "installing torch",
          "package": "installing emotalk", "check": "checking the environment"}
CHECK_CODE = ("import os, emotalk_core, torch; "
              "print('emotalk', emotalk_core.__version__, 'torch', torch.__version__); "
              "print('from', os.path.dirname(emotalk_core.__file__))")


class SetupError(Exception):
    """Why the set-up failed, in the user's words, with what to do."""


# -- what to run ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetupPlan:
    folder: Path  # the extension's "backend" user folder
    base_python: str
    torch: str = "cpu"  # "cpu" or "cuda"
    wheel: Path | None = None  # our wheel; None: "emotalk-blender==version" from the sources
    version: str = "dev"
    wheels_folder: str = ""  # offline: pip --no-index --find-links
    platform: str = field(default_factory=discovery.current_platform)

    @property
    def env(self) -> Path:
        return discovery.private_env(self.folder)

    @property
    def building(self) -> Path:
        return self.folder / BUILDING

    @property
    def log(self) -> Path:
        return self.folder / LOG_NAME

    @property
    def python(self) -> Path:
        """The interpreter of the environment being built."""
        return discovery.env_python(self.building, self.platform)


@dataclass(frozen=True)
class Step:
    name: str  # a key of WEIGHTS
    argv: list[str]


def find_wheel(addon_dir: Path, version: str) -> Path | None:
    """Our wheel in the zip's wheels/ folder (build_addon.py puts it there)."""
    exact = addon_dir / WHEELS_DIR / f"{PACKAGE}-{version}-py3-none-any.whl"
    if exact.is_file():
        return exact
    found = sorted((addon_dir / WHEELS_DIR).glob(f"{PACKAGE}-*.whl"))
    return found[-1] if found else None


def source_args(plan: SetupPlan, index: str | None = None) -> list[str]:
    """Where pip looks: only the Wheels Folder when one is set (offline machines), else the
    package index (and PyTorch's, for torch)."""
    if plan.wheels_folder:
        return ["--no-index", "--find-links", plan.wheels_folder]
    return ["--extra-index-url", index] if index else []


def torch_index(plan: SetupPlan) -> str | None:
    if plan.torch == "cuda":
        return TORCH_CUDA_INDEX
    return None if plan.platform == "darwin" else TORCH_CPU_INDEX


def pip(plan: SetupPlan, *args: str) -> list[str]:
    return [str(plan.python), "-m", "pip", "install", "--disable-pip-version-check",
            "--progress-bar", "off", *args]


def steps(plan: SetupPlan) -> list[Step]:
    """The commands, in order. The venv step is left out when the building folder already
    holds an environment (a repair, or a set-up that was cancelled or failed)."""
    found: list[Step] = []
    if not (plan.building / VENV_MADE).is_file():
        # --clear: a venv step that was cancelled may have left a folder without pip
        found.append(Step("venv", [plan.base_python, "-m", "venv", "--clear",
                                   str(plan.building)]))
    found.append(Step("torch", pip(plan, f"torch=={TORCH_VERSION}",
                                   *source_args(plan, torch_index(plan)))))
    package = str(plan.wheel) if plan.wheel is not None else f"emotalk-blender=={plan.version}"
    # A newer add-on's wheel replaces the installed one on a repair; its dependencies change
    # only where the new one needs it.
    found.append(Step("package", pip(plan, "--upgrade", "--upgrade-strategy", "only-if-needed",
                                     package, *source_args(plan))))
    found.append(Step("check", [str(plan.python), "-c", CHECK_CODE]))
    return found


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of pip and the check: Blender's PYTHONHOME/PYTHONPATH would make another
    interpreter load Blender's modules, and the user's site-packages would hide what is missing
    from the new environment. pip's own settings (proxies, PIP_*) are kept."""
    env = dict(os.environ if base is None else base)
    for name in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV"):
        env.pop(name, None)
    env.update(PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1", PIP_NO_INPUT="1")
    return env


# -- progress -------------------------------------------------------------------------------------
_PIP_LINE = re.compile(r"^(Collecting|Downloading|Processing|Using cached|Installing collected "
                       r"packages|Successfully installed|Requirement already satisfied)\b")


def step_fraction(step: str, text: str) -> float:
    """How far a step is, from its output so far: pip names each package it collects, then
    installs them all at once."""
    if step not in ("torch", "package"):
        return 0.0
    if "Successfully installed" in text:
        return 1.0
    if "Installing collected packages" in text:
        return 0.85
    collected = len(re.findall(r"(?m)^(Collecting|Processing) ", text))
    return min(0.8, 0.8 * (1.0 - 0.7 ** collected))


def overall_fraction(done: Sequence[str], current: str | None, inner: float,
                     names: Sequence[str]) -> float:
    """The bar's position: the finished steps' shares plus the running one's part. A skipped
    venv step counts as done."""
    total = sum(WEIGHTS[name] for name in WEIGHTS)
    skipped = sum(WEIGHTS[name] for name in WEIGHTS if name not in names)
    finished = skipped + sum(WEIGHTS[name] for name in done)
    running = WEIGHTS[current] * inner if current else 0.0
    return min(1.0, (finished + running) / total)


def last_pip_line(text: str) -> str:
    """The line the progress bar shows: pip's last 'Collecting ...' or similar."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if _PIP_LINE.match(line):
            return line[:120]
    return ""


# -- failures in the user's words -----------------------------------------------------------------
NOT_FOUND = ("Could not find a version that satisfies", "No matching distribution found")
NO_NETWORK = ("NewConnectionError", "Failed to establish a new connection",
              "Temporary failure in name resolution", "Name or service not known",
              "Network is unreachable", "ConnectionError", "Max retries exceeded",
              "getaddrinfo failed", "ProxyError", "SSLError", "Read timed out")
DISK_FULL = ("No space left on device", "[Errno 28]", "There is not enough space on the disk")
SPACE = {"cpu": "about 1.5 GB", "cuda": "about 6 GB"}


def explain(step: str, returncode: int, log_text: str, plan: SetupPlan) -> str:
    """Why `step` failed, and what to do, from its output (the log's part for that step)."""
    log = f"Log: {plan.log}"
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if line.startswith("ERROR")),
                lines[-1] if lines else "")
    if any(mark in log_text for mark in DISK_FULL):
        return disk_full(plan)
    if step == "venv":
        why = last or f"exit code {returncode}"
        return (f"{plan.base_python} could not make a virtual environment ({why}). "
                f"Set Base Python to a Python {discovery.BASE_VERSION} with the venv module "
                f"(python.org's installer has it; on Debian/Ubuntu: apt install "
                f"python{discovery.BASE_VERSION}-venv), then press Set up backend. {log}")
    if step == "check":
        return (f"the new environment cannot import emotalk_core and torch ({last}); it was not "
                f"put in use. Press Repair backend; if that fails too, Remove backend and set "
                f"it up again. {log}")
    what = f"torch {TORCH_VERSION}" if step == "torch" else "the emotalk package"
    missing = any(mark in log_text for mark in NOT_FOUND)
    if plan.wheels_folder and missing:
        return (f"pip found no {what} (or one of its dependencies) for this Python in the "
                f"Wheels Folder {plan.wheels_folder} ({last}). Put the wheels there (on a "
                f"machine with internet: pip download -d FOLDER torch=={TORCH_VERSION} "
                f"<emotalk wheel>), or clear Wheels Folder to download them. {log}")
    if any(mark in log_text for mark in NO_NETWORK) or missing:
        return (f"pip could not download {what}: no network connection, or the package index "
                f"is unreachable ({last}). Connect to the internet (or set pip's proxy), or set "
                f"Wheels Folder to a folder of downloaded wheels, then press Set up backend. "
                f"{log}")
    return (f"{LABELS[step]} failed: pip exited with code {returncode} ({last}). Press Set up "
            f"backend to try again; the log has pip's whole output. {log}")


def disk_full(plan: SetupPlan) -> str:
    return (f"the disk holding {plan.folder} is full: free {SPACE.get(plan.torch, '')} there "
            f"and press Set up backend again (it goes on where it stopped). Log: {plan.log}")


def describe_os_error(exc: OSError, plan: SetupPlan, doing: str) -> str:
    if exc.errno == errno.ENOSPC:
        return disk_full(plan)
    return f"cannot {doing}: {exc.strerror or exc}. Log: {plan.log}"


# -- the folder -----------------------------------------------------------------------------------
def prepare(plan: SetupPlan) -> bool:
    """Make the building folder the one to install into: a working environment moves there to
    be repaired (out of use until it checks again); a building folder left by a cancelled or
    failed set-up is reused. True when an environment was moved for repair."""
    plan.folder.mkdir(parents=True, exist_ok=True)
    if plan.env.exists():
        if plan.building.exists():
            shutil.rmtree(plan.building)
        os.replace(plan.env, plan.building)
        return True
    return False


def put_in_use(plan: SetupPlan) -> Path:
    """Rename the checked environment into place; discovery finds it from then on."""
    if plan.env.exists():
        shutil.rmtree(plan.env)
    os.replace(plan.building, plan.env)
    return discovery.env_python(plan.env, plan.platform)


def remove(folder: Path) -> list[Path]:
    """Remove Set up backend's environment and any unfinished one; the log stays."""
    removed = []
    for name in (discovery.ENV_FOLDER, BUILDING):
        path = folder / name
        if path.exists():
            shutil.rmtree(path)
            removed.append(path)
    return removed


def state(folder: Path, platform: str | None = None) -> str:
    """"ready", "unfinished" (a building folder, no environment) or "none"."""
    platform = platform or discovery.current_platform()
    if discovery.is_file(discovery.env_python(discovery.private_env(folder), platform)):
        return "ready"
    return "unfinished" if (folder / BUILDING).exists() else "none"


# -- the job --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetupStatus:
    finished: bool
    fraction: float
    message: str


class SetupJob:
    """Runs the steps one after another as child processes in their own process group (so a
    cancel stops pip and whatever it started). Poll it; when finished, `python` is the new
    environment's interpreter, or `error` says why there is none."""

    def __init__(self, plan: SetupPlan, env: dict[str, str] | None = None):
        self.plan = plan
        self.env = child_env(env)
        self.error: str | None = None
        self.cancelled = False
        self.finished = False
        self.python: Path | None = None
        self.report = ""  # the check's output: versions and where emotalk_core came from
        self.started = time.monotonic()
        self._proc: subprocess.Popen | None = None
        self._log_offset = 0
        self._done: list[str] = []
        self._message = "starting"
        try:
            self.repairing = prepare(plan)
            self._steps = steps(plan)
            self._names = [s.name for s in self._steps]
            with plan.log.open("w", encoding="utf-8") as log:
                log.write(f"EmoTalk Set up backend: {plan}\n")
        except OSError as exc:
            self._fail(describe_os_error(exc, plan, f"prepare {plan.folder}"))

    # -- driving --------------------------------------------------------------------------------
    def poll(self) -> SetupStatus:
        """Advance without blocking. Never raises: a failure lands in `error`."""
        if not self.finished:
            try:
                self._advance()
            except OSError as exc:
                self._stop_process()
                self._fail(describe_os_error(exc, self.plan, "run the set-up"))
        return self.status

    @property
    def status(self) -> SetupStatus:
        """Where the job is, without advancing it (for drawing)."""
        return SetupStatus(self.finished, self.fraction, self._message)

    def run(self, interval: float = 0.2) -> SetupStatus:
        """Blocking (background Blender, tests)."""
        while True:
            status = self.poll()
            if status.finished:
                return status
            time.sleep(interval)

    def cancel(self) -> None:
        """Stop pip and its children; the building folder stays out of use."""
        if self.finished:
            return
        self.cancelled = True
        self._stop_process()
        self._fail(f"Set up backend was cancelled; nothing was put in use (the unfinished "
                   f"environment in {self.plan.building} is reused by the next Set up).")

    @property
    def summary(self) -> str:
        """One line for the user once the environment is in use."""
        seconds = time.monotonic() - self.started
        return f"Backend ready in {seconds:.0f} s: {self.report} ({self.python})"

    @property
    def fraction(self) -> float:
        if self.finished:
            return 1.0 if self.error is None else 0.0
        current = self._current.name if self._proc is not None else None
        inner = step_fraction(current, self._step_text()) if current else 0.0
        return overall_fraction(self._done, current, inner, getattr(self, "_names", []))

    # -- internals ------------------------------------------------------------------------------
    @property
    def _current(self) -> Step:
        return self._steps[len(self._done)]

    def _fail(self, message: str) -> None:
        self.error, self.finished, self._proc = message, True, None
        with contextlib.suppress(OSError), self.plan.log.open("a", encoding="utf-8") as log:
            log.write(f"\nFAILED: {message}\n")

    def _step_text(self) -> str:
        try:
            with self.plan.log.open("r", encoding="utf-8", errors="replace") as log:
                log.seek(self._log_offset)
                return log.read()
        except OSError:
            return ""

    def _advance(self) -> None:
        if self._proc is None:
            self._start(self._current)
            return
        code = self._proc.poll()
        step = self._current
        text = self._step_text()
        if code is None:
            line = last_pip_line(text)
            self._message = f"{LABELS[step.name]}: {line}" if line else LABELS[step.name]
            return
        self._proc = None
        if code != 0:
            self._fail(explain(step.name, code, text, self.plan))
            return
        if step.name == "check":
            self.report = text.strip().splitlines()[0] if text.strip() else ""
            where = text.rsplit("from ", 1)[-1].strip()
            if where and not Path(where).resolve().is_relative_to(self.plan.building.resolve()):
                self._fail(f"the new environment imports emotalk_core from {where}, not its own "
                           f"copy (is PYTHONPATH set?); it was not put in use. Log: "
                           f"{self.plan.log}")
                return
        if step.name == "venv":
            (self.plan.building / VENV_MADE).write_text("venv step finished\n", encoding="utf-8")
        self._done.append(step.name)
        if len(self._done) == len(self._steps):
            self.python = put_in_use(self.plan)
            self.finished = True
            self._message = self.summary
            with self.plan.log.open("a", encoding="utf-8") as log:
                log.write(f"\nREADY: {self.summary}\n")
        else:
            self._start(self._current)

    def _start(self, step: Step) -> None:
        self._message = LABELS[step.name]
        with self.plan.log.open("a", encoding="utf-8") as log:
            log.write(f"\n== {step.name}: {' '.join(step.argv)}\n")
            log.flush()
            self._log_offset = log.tell()
            kwargs: dict = {}
            if os.name == "nt":
                kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
            else:
                kwargs["start_new_session"] = True
            try:
                self._proc = subprocess.Popen(step.argv, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=self.env,
                                              cwd=self.plan.folder, **kwargs)
            except FileNotFoundError:
                self._fail(f"{step.argv[0]} does not exist: set Base Python to a Python "
                           f"{discovery.BASE_VERSION} interpreter, then press Set up backend.")

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
