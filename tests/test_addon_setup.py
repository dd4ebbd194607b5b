"""Set up backend without Blender (blender_addon/setup.py): the commands, the progress, the
failures' words, and real runs of the job with a fake Python whose `-m pip` prints like pip and
exits as the test says, to cover success, cancel and failures."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from blender_addon import discovery, setup
from blender_addon.setup import SetupJob, SetupPlan

FAKE = r'''#!{python}
"""A stand-in for a base Python, a venv's Python and its pip (FAKE_PIP: ok, fail, hang,
nospace, nonet, notfound)."""
import os, shutil, sys, time
args = sys.argv[1:]
if args[:2] == ["-m", "venv"]:
    target = args[-1]
    os.makedirs(os.path.join(target, "bin"), exist_ok=True)
    shutil.copy(__file__, os.path.join(target, "bin", "python"))
    sys.exit(0)
if args[:2] == ["-m", "pip"]:
    mode = os.environ.get("FAKE_PIP", "ok")
    print("Collecting torch==2.13.0", flush=True)
    if mode == "hang":
        with open(os.environ["FAKE_PIP_PID"], "w") as out:
            out.write(str(os.getpid()))
        time.sleep(600)
    if mode == "nonet":
        print("WARNING: Retrying after connection broken by 'NewConnectionError'")
        print("ERROR: Could not find a version that satisfies the requirement torch==2.13.0")
        sys.exit(1)
    if mode == "notfound":
        print("ERROR: Could not find a version that satisfies the requirement torch==2.13.0")
        sys.exit(1)
    if mode == "nospace":
        print("ERROR: Could not install packages due to an OSError: [Errno 28] No space left "
              "on device")
        sys.exit(1)
    if mode == "fail":
        print("ERROR: pip's own failure")
        sys.exit(2)
    print("Installing collected packages: torch")
    print("Successfully installed torch-2.13.0")
    sys.exit(0)
if args[:1] == ["-c"]:
    if os.environ.get("FAKE_CHECK") == "fail":
        print("ModuleNotFoundError: No module named 'torch'")
        sys.exit(1)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print("emotalk 0.1.0 torch 2.13.0")
    print("from", os.path.join(here, "lib", "emotalk_core"))
    sys.exit(0)
sys.exit(f"fake python: unexpected {{args}}")
'''


@pytest.fixture
def fake_python(tmp_path) -> Path:
    path = tmp_path / "base" / "python3.11"
    path.parent.mkdir()
    path.write_text(FAKE.format(python=sys.executable))
    path.chmod(0o755)
    return path


def plan_for(tmp_path: Path, base: Path | str, **kw) -> SetupPlan:
    return SetupPlan(folder=tmp_path / "user" / "backend", base_python=str(base),
                     wheel=tmp_path / "emotalk_blender-0.1.0-py3-none-any.whl", version="0.1.0",
                     platform="posix", **kw)


# -- commands -------------------------------------------------------------------------------------
def test_the_commands_online_cpu(tmp_path):
    plan = plan_for(tmp_path, "/usr/bin/python3.11")
    venv, torch, package, check = setup.steps(plan)
    building = str(plan.folder / "env.building")
    assert venv.argv == ["/usr/bin/python3.11", "-m", "venv", "--clear", building]
    python = f"{building}/bin/python"
    assert torch.argv[:4] == [python, "-m", "pip", "install"]
    assert torch.argv[-3:] == ["torch==2.13.0", "--extra-index-url", setup.TORCH_CPU_INDEX]
    assert package.argv[-1] == str(plan.wheel) and "--no-index" not in package.argv
    assert check.argv[:2] == [python, "-c"] and "import os, emotalk_core, torch" in check.argv[2]


def test_the_commands_offline_cuda_windows(tmp_path):
    plan = SetupPlan(**{**plan_for(tmp_path, "C:/Python311/python.exe").__dict__,
                        "torch": "cuda", "wheels_folder": "D:/wheels", "platform": "nt"})
    _, torch, package, _ = setup.steps(plan)
    assert torch.argv[0] == str(plan.folder / "env.building" / "Scripts" / "python.exe")
    assert torch.argv[-4:] == ["torch==2.13.0", "--no-index", "--find-links", "D:/wheels"]
    assert package.argv[-3:] == ["--no-index", "--find-links", "D:/wheels"]


def test_cuda_and_macos_torch_indexes(tmp_path):
    base = plan_for(tmp_path, "python3.11").__dict__
    assert setup.torch_index(SetupPlan(**{**base, "torch": "cuda"})) == setup.TORCH_CUDA_INDEX
    assert setup.torch_index(SetupPlan(**{**base, "platform": "darwin"})) is None


def test_an_add_on_without_its_wheel_asks_for_the_package_by_version(tmp_path):
    plan = SetupPlan(**{**plan_for(tmp_path, "python3.11").__dict__, "wheel": None})
    assert "emotalk-blender==0.1.0" in setup.steps(plan)[2].argv


def test_the_wheel_is_found_in_the_zips_wheels_folder(tmp_path):
    assert setup.find_wheel(tmp_path, "0.1.0") is None
    wheel = tmp_path / "wheels" / "emotalk_blender-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK")
    assert setup.find_wheel(tmp_path, "0.1.0") == wheel


def test_blenders_python_variables_do_not_reach_pip():
    env = setup.child_env({"PYTHONHOME": "/blender/python", "PYTHONPATH": "/x", "PATH": "/bin",
                           "PIP_PROXY": "http://proxy"})
    assert "PYTHONHOME" not in env and "PYTHONPATH" not in env
    assert env["PIP_PROXY"] == "http://proxy" and env["PYTHONNOUSERSITE"] == "1"


# -- progress -------------------------------------------------------------------------------------
def test_progress_parsing():
    assert setup.step_fraction("torch", "") == 0.0
    some = setup.step_fraction("torch", "Collecting torch\nCollecting numpy\n")
    more = setup.step_fraction("torch", "Collecting torch\nCollecting numpy\nCollecting x\n")
    assert 0 < some < more <= 0.8
    assert setup.step_fraction("package", "Installing collected packages: a, b") == 0.85
    assert setup.step_fraction("package", "Successfully installed a b") == 1.0
    names = ["venv", "torch", "package", "check"]
    assert setup.overall_fraction([], "venv", 0.0, names) == 0.0
    assert setup.overall_fraction(["venv"], "torch", 0.5, names) == pytest.approx(0.35)
    assert setup.overall_fraction(["venv", "torch", "package", "check"], None, 0, names) == 1.0
    # a repair has no venv step: its share counts as done
    assert setup.overall_fraction([], "torch", 0.0, names[1:]) == pytest.approx(0.05)
    assert setup.last_pip_line("noise\nCollecting numpy<2\n  Downloading x.whl (20 MB)\nblah") \
        == "Downloading x.whl (20 MB)"


# -- failure wording ------------------------------------------------------------------------------
def test_failure_wording(tmp_path):
    plan = plan_for(tmp_path, "/usr/bin/python3.11")
    log = f"Log: {plan.log}"
    offline = setup.explain("torch", 1, "ERROR: Could not find a version that satisfies the "
                            "requirement torch==2.13.0 (from versions: none)", plan)
    assert offline.startswith("pip could not download torch 2.13.0: no network connection")
    assert "Wheels Folder" in offline and offline.endswith(log)
    refused = setup.explain("package", 1, "WARNING: Retrying ... NewConnectionError(...)\n"
                            "ERROR: Could not install", plan)
    assert refused.startswith("pip could not download the emotalk package: no network")
    full = setup.explain("torch", 1, "OSError: [Errno 28] No space left on device", plan)
    assert full.startswith(f"the disk holding {plan.folder} is full: free about 1.5 GB")
    other = setup.explain("package", 2, "Collecting x\nERROR: something else\nmore", plan)
    assert other == (f"installing emotalk failed: pip exited with code 2 (ERROR: something "
                     f"else). Press Set up backend to try again; the log has pip's whole "
                     f"output. {log}")
    folder = SetupPlan(**{**plan.__dict__, "wheels_folder": "/media/wheels"})
    missing = setup.explain("torch", 1, "ERROR: No matching distribution found for torch", folder)
    assert missing.startswith("pip found no torch 2.13.0 (or one of its dependencies) for this "
                              "Python in the Wheels Folder /media/wheels")
    venv = setup.explain("venv", 1, "Error: ensurepip is not available", plan)
    assert "/usr/bin/python3.11 could not make a virtual environment (Error: ensurepip" in venv
    assert "Set Base Python to a Python 3.11" in venv
    check = setup.explain("check", 1, "ModuleNotFoundError: No module named 'torch'", plan)
    assert "cannot import emotalk_core and torch" in check and "not put in use" in check


def test_a_full_disk_raised_here_is_explained(tmp_path):
    plan = plan_for(tmp_path, "python3.11")
    message = setup.describe_os_error(OSError(28, "No space left on device"), plan, "x")
    assert message.startswith("the disk holding") and str(plan.log) in message


# -- the folder: built aside, renamed into place --------------------------------------------------
def test_building_aside_then_renaming_into_place(tmp_path):
    plan = plan_for(tmp_path, "python3.11")
    assert setup.prepare(plan) is False and setup.state(plan.folder, "posix") == "none"
    python = discovery.env_python(plan.building, "posix")
    python.parent.mkdir(parents=True)
    python.write_text("")
    assert setup.state(plan.folder, "posix") == "unfinished"
    assert setup.put_in_use(plan) == discovery.env_python(plan.env, "posix")
    assert setup.state(plan.folder, "posix") == "ready" and not plan.building.exists()
    # a repair takes the environment out of use while it is rebuilt
    assert setup.prepare(plan) is True
    assert not plan.env.exists() and python.is_file()
    assert setup.remove(plan.folder) == [plan.building] and setup.state(plan.folder) == "none"


# -- real runs with the fake pip ------------------------------------------------------------------
def run_job(plan: SetupPlan) -> tuple[SetupJob, list[float]]:
    job = SetupJob(plan)
    seen = []
    deadline = time.monotonic() + 60
    while not job.finished and time.monotonic() < deadline:
        seen.append(job.poll().fraction)
        time.sleep(0.02)
    assert job.finished, "the fake set-up did not end in 60 s"
    return job, seen


def test_a_set_up_puts_the_checked_environment_in_use(tmp_path, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_PIP", "ok")
    plan = plan_for(tmp_path, fake_python)
    job, seen = run_job(plan)
    assert job.error is None and job.python == discovery.env_python(plan.env, "posix")
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert "emotalk 0.1.0 torch 2.13.0" in job.report
    assert setup.state(plan.folder, "posix") == "ready" and not plan.building.exists()
    log = plan.log.read_text()
    assert "== torch:" in log and "Successfully installed" in log and "READY:" in log
    # Repair: no new venv, the same place afterwards
    again, _ = run_job(plan)
    assert again.repairing and again.error is None
    assert "venv" not in [s.name for s in again._steps]
    assert setup.state(plan.folder, "posix") == "ready"


@pytest.mark.parametrize(("mode", "start"), [
    ("fail", "installing torch failed: pip exited with code 2 (ERROR: pip's own failure)"),
    ("nonet", "pip could not download torch 2.13.0: no network connection"),
    ("nospace", "the disk holding"),
])
def test_a_failing_pip_leaves_nothing_in_use(tmp_path, fake_python, monkeypatch, mode, start):
    monkeypatch.setenv("FAKE_PIP", mode)
    plan = plan_for(tmp_path, fake_python)
    job, _ = run_job(plan)
    assert job.error is not None and job.error.startswith(start), job.error
    assert str(plan.log) in job.error and job.python is None
    assert setup.state(plan.folder, "posix") == "unfinished" and not plan.env.exists()
    assert "FAILED: " in plan.log.read_text()
    # the next try goes on in the same folder, without a new venv
    monkeypatch.setenv("FAKE_PIP", "ok")
    again, _ = run_job(plan)
    assert again.error is None and [s.name for s in again._steps][0] == "torch"
    assert setup.state(plan.folder, "posix") == "ready"


def test_a_failing_check_puts_nothing_in_use(tmp_path, fake_python, monkeypatch):
    monkeypatch.setenv("FAKE_CHECK", "fail")
    plan = plan_for(tmp_path, fake_python)
    job, _ = run_job(plan)
    assert job.error.startswith("the new environment cannot import emotalk_core and torch "
                                "(ModuleNotFoundError: No module named 'torch')")
    assert not plan.env.exists()


def test_cancel_kills_pip_and_leaves_nothing_in_use(tmp_path, fake_python, monkeypatch):
    pid_file = tmp_path / "pip.pid"
    monkeypatch.setenv("FAKE_PIP", "hang")
    monkeypatch.setenv("FAKE_PIP_PID", str(pid_file))
    plan = plan_for(tmp_path, fake_python)
    job = SetupJob(plan)
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.02)
    status = job.poll()
    assert not status.finished and status.message.startswith("installing torch: Collecting torch")
    job.cancel()
    assert job.finished and job.error.startswith("Set up backend was cancelled; nothing was "
                                                 "put in use")
    pid = int(pid_file.read_text())
    from emotalk_core.pids import alive

    assert not alive(pid), "pip still runs after the cancel"
    assert not plan.env.exists() and setup.state(plan.folder, "posix") == "unfinished"


def test_a_base_python_that_does_not_exist(tmp_path):
    job, _ = run_job(plan_for(tmp_path, tmp_path / "no-python"))
    assert job.error.startswith(f"{tmp_path / 'no-python'} does not exist: set Base Python")


# -- the zip --------------------------------------------------------------------------------------
def test_the_zip_carries_the_wheel_it_is_given(tmp_path):
    import zipfile

    import build_addon

    version = build_addon.version()
    wheel = tmp_path / "dist" / f"emotalk_blender-{version}-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"not really a wheel")
    zip_path = build_addon.build(tmp_path / "out", wheel.parent)  # the folder make dist fills
    names = zipfile.ZipFile(zip_path).namelist()
    assert f"wheels/{wheel.name}" in names and "setup.py" in names and "discovery.py" in names
    with pytest.raises(SystemExit, match="no wheel at"):
        build_addon.build(tmp_path / "out", tmp_path / "elsewhere")
