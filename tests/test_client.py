"""The protocol's Python client (`emotalk_core/client.py`) against small stand-in backends (no
model, no torch in the child)."""

from __future__ import annotations

import ast
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emotalk_core import client as c
from emotalk_core import protocol as p


def test_client_module_imports_the_standard_library_and_the_protocol_only():
    """The add-on copies client.py beside protocol.py: nothing else may be imported."""
    modules = set()
    for node in ast.walk(ast.parse(Path(c.__file__).read_text())):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 1 and node.module == "protocol", node.module
            else:
                modules.add(node.module.split(".")[0])
    assert modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)


# -- the client, against stand-in backends --------------------------------------------------------
FAKE_BACKEND = textwrap.dedent("""
    import json, sys, time
    sys.stderr.write("fake backend up\\n"); sys.stderr.flush()
    cancelled = set()
    def send(obj):
        sys.stdout.write(json.dumps(obj) + "\\n"); sys.stdout.flush()
    for line in sys.stdin:
        msg = json.loads(line)
        method, id = msg.get("method"), msg.get("id")
        if method == "$/cancelRequest":
            cancelled.add(msg["params"]["id"]); continue
        if method == "exit":
            sys.exit(0)
        if method == "echo":
            send({"jsonrpc": "2.0", "id": id, "result": msg.get("params")})
        elif method == "slow":
            for i in range(3):
                send({"jsonrpc": "2.0", "method": "$/progress",
                      "params": {"id": id, "done": i, "total": 3, "message": "step"}})
                time.sleep(0.05)
            send({"jsonrpc": "2.0", "id": id, "result": "slow done"})
        elif method == "hang":
            send({"jsonrpc": "2.0", "method": "note", "params": {"hello": 1}})
        elif method == "hang_then_cancel":
            sys.stdout.write("this is not a protocol line\\n"); sys.stdout.flush()
            for l2 in sys.stdin:
                m2 = json.loads(l2)
                if m2.get("method") == "$/cancelRequest" and m2["params"]["id"] == id:
                    send({"jsonrpc": "2.0", "id": id, "error": {"code": -32800,
                          "message": "cancelled", "data": {"detail": "as asked"}}})
                    break
        elif method == "die":
            sys.stderr.write("fatal: dying on purpose\\n"); sys.stderr.flush()
            sys.exit(3)
        elif method == "shutdown":
            send({"jsonrpc": "2.0", "id": id, "result": None})
        else:
            send({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "unknown"}})
""")


@pytest.fixture
def fake_client(tmp_path):
    script = tmp_path / "fake_backend.py"
    script.write_text(FAKE_BACKEND)
    notes = []
    client = c.Client([sys.executable, str(script)], log_path=tmp_path / "backend.log",
                      on_notification=notes.append)
    client.notes = notes
    yield client
    client.close(grace=2.0)


def test_client_call_returns_results_and_raises_backend_errors(fake_client):
    assert fake_client.call("echo", {"a": [1, 2]}, timeout=10) == {"a": [1, 2]}
    with pytest.raises(p.BackendError) as info:
        fake_client.call("nope", timeout=10)
    assert info.value.code == p.METHOD_NOT_FOUND and info.value.message == "unknown"


def test_client_reports_progress_on_the_calling_thread(fake_client):
    seen = []
    assert fake_client.call("slow", on_progress=seen.append, timeout=10) == "slow done"
    assert seen and all(isinstance(s, c.Progress) and s.total == 3 for s in seen)
    assert seen[-1].fraction <= 1.0


def test_client_poll_never_blocks_and_cancel_ends_the_call(fake_client):
    handle = fake_client.start_call("hang_then_cancel")
    t = time.monotonic()
    status = handle.poll()
    assert time.monotonic() - t < 0.05 and not status.finished
    handle.cancel()
    deadline = time.monotonic() + 10
    while not handle.poll().finished and time.monotonic() < deadline:
        time.sleep(0.01)
    status = handle.poll()
    assert status.finished and status.result is None
    assert status.error.code == p.REQUEST_CANCELLED and status.error.detail == "as asked"
    assert fake_client.call("echo", {"still": "alive"}, timeout=10) == {"still": "alive"}


def test_client_timeout_cancels_and_raises(fake_client):
    with pytest.raises(p.BackendError) as info:
        fake_client.call("hang_then_cancel", timeout=0.3)
    assert info.value.code == p.REQUEST_TIMEOUT


def test_client_passes_other_notifications_on(fake_client):
    handle = fake_client.start_call("hang")
    deadline = time.monotonic() + 10
    while not fake_client.notes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_client.notes[0]["method"] == "note"
    assert not handle.finished


def test_a_dead_backend_fails_every_pending_and_later_call(fake_client, tmp_path):
    pending = fake_client.start_call("hang")
    with pytest.raises(p.BackendError) as info:
        fake_client.call("die", timeout=20)
    err = info.value
    assert err.code == p.BACKEND_STOPPED and "exit status 3" in err.message
    assert str(tmp_path / "backend.log") in err.message
    assert "dying on purpose" in err.detail
    assert pending.poll().finished and pending.poll().error.code == p.BACKEND_STOPPED
    with pytest.raises(p.BackendError) as later:
        fake_client.call("echo", {}, timeout=5)
    assert later.value.code == p.BACKEND_STOPPED
    assert not fake_client.alive
    assert "dying on purpose" in (tmp_path / "backend.log").read_text()


def test_close_releases_every_pipe_even_of_a_dead_backend(fake_client):
    with pytest.raises(p.BackendError):
        fake_client.call("die", timeout=20)
    fake_client.close(grace=2.0)
    process = fake_client.process
    assert process.stdin.closed and process.stdout.closed and process.stderr.closed


def test_a_backend_that_cannot_start_fails_clearly(tmp_path):
    with pytest.raises(p.BackendError) as info:
        c.Client([str(tmp_path / "no-such-python")])
    assert info.value.code == p.BACKEND_STOPPED and "cannot start" in info.value.message


def test_an_unwritable_log_fails_clearly(tmp_path):
    with pytest.raises(p.BackendError) as info:
        c.Client([sys.executable, "-c", "pass"], log_path=tmp_path / "no" / "dir" / "x.log")
    assert "cannot write the backend log" in info.value.message


def test_a_backend_that_exits_at_once_fails_the_first_call():
    client = c.Client([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); "
                       "sys.exit(2)"])
    try:
        with pytest.raises(p.BackendError) as info:
            client.call("echo", {}, timeout=20)
        assert info.value.code == p.BACKEND_STOPPED and "exit status 2" in info.value.message
        assert "boom" in info.value.detail
    finally:
        assert client.close() == 2


def test_close_is_polite_then_firm(tmp_path):
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                        "time.sleep(60)\n")
    client = c.Client([sys.executable, str(stubborn)])
    t = time.monotonic()
    status = client.close(grace=0.5)
    assert status is not None and status != 0 and time.monotonic() - t < 10
    assert client.close() == status  # idempotent


def test_close_of_a_well_behaved_backend_exits_zero(fake_client):
    assert fake_client.close(grace=5) == 0
