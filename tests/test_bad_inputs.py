"""Bad files, bad models and interrupted writers (issue 11): every bad input is one line from
the project's own errors, inputs stay byte-identical, nothing is left behind, and memory stays
bounded. The stdio server's side is in test_server.py, the batch bake's in test_bake.py, and
generated bad inputs in test_fuzz.py."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from emotalk_core import checkpoint as ckpt
from emotalk_core import export, files
from emotalk_core.cli import main
from emotalk_core.controls import Controls
from emotalk_core.errors import AudioError, ControlError, ModelError, OutputError
from emotalk_core.export import write_curves
from emotalk_core.files import atomic_write

from .conftest import speechlike, tiny_wav2vec2_fields

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *args: str) -> tuple[int, str]:
    """Exit status and the one error line (asserting there is exactly one and no traceback)."""
    code = main(list(args))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emotalk: "), err
    assert "Traceback" not in err
    return code, lines[0]


def run_bounded(capsys, *args: str, timeout: float = 60.0) -> tuple[int, str]:
    """`run` in a daemon thread: a reader that blocks (on a FIFO) fails the test, not hangs."""
    outcome: list[tuple[int, str]] = []
    worker = threading.Thread(target=lambda: outcome.append(run(capsys, *args)), daemon=True)
    worker.start()
    worker.join(timeout)
    assert outcome, f"emotalk {' '.join(args)[:80]} blocked for {timeout} s"
    return outcome[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model(tmp_path, tiny_model_dir) -> Path:
    """A copy of the tiny model that a test may damage."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def edit_config(folder: Path, edit) -> None:
    header = json.loads((folder / ckpt.CONFIG_FILE).read_text())
    edit(header)
    (folder / ckpt.CONFIG_FILE).write_text(json.dumps(header))


# -- 1. outputs never replace inputs --------------------------------------------------------------
def test_predict_refuses_to_write_over_its_own_audio(capsys, tmp_path, tiny_model_dir):
    """A WAV named take.npy and no -o: the default output is the input itself."""
    take = tmp_path / "take.npy"
    sf.write(take, speechlike(0.5), 16000, format="WAV")
    link = tmp_path / "link.npy"
    link.symlink_to(take)
    hard = tmp_path / "hard.npy"
    os.link(take, hard)
    before = digest(take)
    for extra in ([], ["-o", str(take)], ["-o", str(link)], ["-o", str(hard)],
                  ["-o", str(tmp_path / "." / "take.npy")]):
        code, line = run(capsys, "predict", str(take), "--model", str(tiny_model_dir), *extra)
        assert code == 1 and "is the input file" in line and "destroy the input" in line, line
    assert digest(take) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.npy", "link.npy", "take.npy"]


def test_predict_refuses_outputs_that_are_its_other_inputs(capsys, tmp_path, tiny_model_dir,
                                                           speech_wav):
    words = tmp_path / "words.csv"
    words.write_text("Hello there.")
    reference = tmp_path / "reference.npy"
    sf.write(reference, speechlike(0.5, seed=2), 16000, format="WAV")
    before = (digest(words), digest(reference))
    for extra in (["--transcript-file", str(words), "-o", str(words)],
                  ["--emotion-reference", str(reference), "-o", str(reference)]):
        code, line = run(capsys, "predict", str(speech_wav), "--model", str(tiny_model_dir),
                         *extra)
        assert code == 1 and "is the input file" in line, line
    assert (digest(words), digest(reference)) == before


def test_every_curve_writer_shares_the_guard(tmp_path):
    source = tmp_path / "clip.json"
    source.write_text("{}")
    values = np.zeros((3, 52), np.float32)
    with pytest.raises(OutputError, match="is the input file"):
        write_curves(source, values, 30, inputs=[source])
    with pytest.raises(OutputError, match="is the input file"), \
            atomic_write(source, inputs=[None, source]):
        pass
    assert source.read_text() == "{}"


def test_import_official_never_writes_over_an_encoder_config(tmp_path):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps(tiny_wav2vec2_fields()))
    before = digest(encoder / "config.json")
    checkpoint = tmp_path / "EmoTalk.pth"
    torch.save({}, checkpoint)
    with pytest.raises(OutputError, match="is the input file"):
        ckpt.import_official(checkpoint, encoder, encoder, out=encoder)
    assert digest(encoder / "config.json") == before


def test_a_batch_output_must_not_be_another_input(tmp_path):
    from blender_addon.headless import bake

    (tmp_path / "sub").mkdir()
    first, second = tmp_path / "sub" / "a.blend", tmp_path / "a.blend"
    with pytest.raises(OutputError, match="is the input file"):
        bake.plan_jobs([first, second], out_dir=str(tmp_path))  # a's output is the 2nd input


# -- 2. wrong types are refused at load --------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.complex64, torch.int64])
def test_weights_that_are_not_floating_point_are_refused(model, dtype):
    state = load_file(model / ckpt.WEIGHTS_FILE)
    state = {k: v.to(dtype) for k, v in state.items()}
    save_file(state, model / ckpt.WEIGHTS_FILE)
    with pytest.raises(ModelError, match="not floating-point") as info:
        ckpt.load_model(model)
    assert "content_encoder.conv1.weight" in str(info.value)


def test_int8_presets_are_refused(model):
    prototypes = load_file(model / ckpt.PRESETS_FILE)["prototypes"]
    save_file({"prototypes": prototypes.to(torch.int8)}, model / ckpt.PRESETS_FILE)
    with pytest.raises(ModelError, match=r"presets.safetensors does not fit.*prototypes I8"):
        ckpt.load_model(model)


def test_non_finite_weights_are_refused(model):
    state = load_file(model / ckpt.WEIGHTS_FILE)
    state["head.bias"][3] = float("nan")
    save_file(state, model / ckpt.WEIGHTS_FILE)
    with pytest.raises(ModelError, match="NaN or infinite weights.*head.bias"):
        ckpt.load_model(model)


CONFIG_EDITS = {
    "float window": (lambda c: c.update(window_frames=600.5),
                     "window_frames must be an integer within [1, 10000], got 600.5"),
    "text size": (lambda c: c.update(num_persons="24"), "num_persons must be an integer"),
    "bool as size": (lambda c: c["decoder"].update(layers=True), "layers must be an integer"),
    "int as bool": (lambda c: c.update(phone_input=1), "phone_input must be true or false"),
    "text as bool": (lambda c: c.update(contact_head="yes"), "contact_head must be true or"),
    "labels as text": (lambda c: c.update(emotion_labels="abc"), "emotion_labels must be a list"),
    "labels repeat": (lambda c: c.update(emotion_labels=["a", "a"]), "must not repeat"),
    "heads zero": (lambda c: c["decoder"].update(heads=0), "heads must be an integer within"),
    "negative size": (lambda c: c["content_encoder"].update(hidden_size=-4),
                      "hidden_size must be an integer within [1,"),
    "heads do not divide": (lambda c: c["content_encoder"].update(num_heads=3),
                            "hidden_size must be divisible by num_heads"),
    "nan dropout": (lambda c: c["decoder"].update(dropout=float("nan")),
                    "dropout must be a number"),
    "name not text": (lambda c: c.update(name=5), "name must be a string"),
    "three levels": (lambda c: c.update(num_levels=3), "num_levels must be 2"),
    "huge persons": (lambda c: c.update(num_persons=10**9), "num_persons must be an integer"),
}  # fmt: skip


@pytest.mark.parametrize("case", CONFIG_EDITS, ids=list(CONFIG_EDITS))
def test_config_fields_of_the_wrong_type_or_size_are_refused(model, case):
    edit, message = CONFIG_EDITS[case]
    edit_config(model, lambda header: edit(header["config"]))
    with pytest.raises(ModelError) as info:
        ckpt.load_model(model)
    assert message in str(info.value)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda h: h.update(format_version="1"), 'format_version must be the integer 1, got a '
                                              'string "1"'),
    (lambda h: h.update(format_version=True), "format_version must be the integer 1"),
    (lambda h: h.update(metadata=[1, 2]), "metadata must be a JSON object, got a list"),
    (lambda h: h.update(presets="happy"), "presets must be a list of distinct preset names"),
    (lambda h: h.update(presets=["happy", "happy"]), "presets must be a list of distinct"),
    (lambda h: h.update(config=[]), "model config must be a JSON object"),
])  # fmt: skip
def test_header_fields_of_the_wrong_type_are_refused(model, edit, message):
    edit_config(model, edit)
    with pytest.raises(ModelError) as info:
        ckpt.load_model(model)
    assert message in str(info.value)


def test_a_bad_model_is_one_line_from_the_command_line(capsys, model, speech_wav, tmp_path):
    edit_config(model, lambda h: h["config"].update(window_frames=600.5))
    code, line = run(capsys, "predict", str(speech_wav), "--model", str(model), "-o",
                     str(tmp_path / "o.npy"))
    assert code == 1 and "window_frames must be an integer" in line
    assert not (tmp_path / "o.npy").exists()


# -- 5. sizes are checked before anything is allocated --------------------------------------------
def peak_child(code: str) -> tuple[int, str]:
    """Run `code` in a fresh interpreter; returns (peak resident MB, its last stdout line)."""
    script = textwrap.dedent(code) + textwrap.dedent("""
        import resource
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    *lines, peak = proc.stdout.strip().splitlines()
    return int(peak), lines[-1] if lines else ""


def test_a_huge_network_in_a_small_config_is_refused_before_allocation(model):
    """Sizes within the bounds that would take about 100 GB: compared with the weights file's
    header on the meta device, not built."""
    def huge(config):
        config["content_encoder"].update(hidden_size=16384, ffn_size=65536, num_layers=64,
                                         conv_channels=16384)
    edit_config(model, lambda h: huge(h["config"]))
    peak, said = peak_child(f"""
        from emotalk_core.checkpoint import load_model
        from emotalk_core.errors import ModelError
        try:
            load_model({str(model)!r})
        except ModelError as exc:
            print("refused:", exc.message[:120])
    """)
    assert said.startswith("refused:") and "does not fit the network" in said, said
    assert peak < 1500, f"peak {peak} MB"


def pth_bomb(path: Path, uncompressed_mb: int) -> None:
    """A PyTorch zip checkpoint whose tensor storage is a deflated block of zeros: small on
    disk, `uncompressed_mb` MB once read."""
    torch.save({"x": torch.zeros(4)}, path)
    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w") as out:
        for info, data in entries:
            if "/data/" not in info.filename:
                out.writestr(info, data)
                continue
            big = zipfile.ZipInfo(info.filename)
            big.compress_type = zipfile.ZIP_DEFLATED
            with out.open(big, "w", force_zip64=True) as handle:
                block = bytes(1 << 20)
                for _ in range(uncompressed_mb):
                    handle.write(block)


def test_a_compressed_checkpoint_is_refused_before_it_is_unpacked(tmp_path, monkeypatch):
    encoder = tmp_path / "encoder.json"
    encoder.write_text(json.dumps(tiny_wav2vec2_fields()))
    bomb = tmp_path / "EmoTalk.pth"
    pth_bomb(bomb, 256)
    assert bomb.stat().st_size < 2 << 20

    def never(*args, **kwargs):
        raise AssertionError("torch.load ran on a checkpoint that was too large")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(ModelError, match=r"unpacks to 256 MB.*more than the weights"):
        ckpt.import_official(bomb, encoder, encoder, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- 6. the file system's own failures are our errors ------------------------------------------
@pytest.fixture
def locked(tmp_path, monkeypatch) -> Path:
    """A folder whose contents cannot be looked at: mode 000 for a normal user; as root (who
    reads anything) the permission error the system gives other users is simulated."""
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "inside").mkdir()
    sf.write(folder / "clip.wav", speechlike(0.3), 16000)
    if os.geteuid() != 0:
        folder.chmod(0)
        yield folder
        folder.chmod(0o755)
        return
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if str(path).startswith(str(folder) + os.sep):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    yield folder


def test_permission_denied_paths_are_one_line(capsys, locked, tiny_model_dir, speech_wav,
                                              tmp_path):
    cases = [
        (["predict", str(locked / "clip.wav"), "--model", str(tiny_model_dir)], "audio file"),
        (["predict", str(speech_wav), "--model", str(locked / "inside")], "model folder"),
        (["predict", str(speech_wav), "--model", str(tiny_model_dir), "-o",
          str(locked / "inside" / "o.npy")], "output folder"),
    ]
    for argv, what in cases:
        code, line = run(capsys, *argv)
        assert code == 1 and f"cannot look at {what}" in line and "permission denied" in line, \
            line


def test_overlong_names_are_one_line(capsys, tmp_path, tiny_model_dir, speech_wav):
    long = "x" * 300
    for argv, what in (
        (["predict", str(tmp_path / f"{long}.wav"), "--model", str(tiny_model_dir)], "audio"),
        (["predict", str(speech_wav), "--model", str(tmp_path / long)], "model folder"),
        (["predict", str(speech_wav), "--model", str(tiny_model_dir), "-o",
          str(tmp_path / f"{long}.npy")], "output file"),
        (["predict", str(speech_wav), "--model", str(tiny_model_dir), "-o",
          str(tmp_path / f"{'y' * 240}.npy")], "choose a shorter name"),  # its partial file
    ):
        code, line = run(capsys, *argv)
        assert code == 1 and what in line, line
        assert "too long" in line, line
        assert len(line) < 400, "a long path is shortened in the message"


def test_a_10_megabyte_path_is_an_audio_error():
    with pytest.raises(AudioError, match="too long") as info:
        from emotalk_core.audio import load_audio

        load_audio("/tmp/" + "a" * 10_000_000 + ".wav")
    assert len(str(info.value)) < 400


def test_symlink_loops_fifos_and_deep_json_say_what_they_are(capsys, tmp_path, model,
                                                             speech_wav):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    code, line = run(capsys, "predict", str(speech_wav), "--model", str(loop))
    assert code == 1 and "loop of symbolic links" in line and "does not exist" not in line
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    code, line = run_bounded(capsys, "predict", str(fifo), "--model", str(model))
    assert code == 1 and "is a FIFO (named pipe), not a file" in line
    assert "empty file" not in line
    (model / ckpt.CONFIG_FILE).write_text("[" * 100_000)
    code, line = run(capsys, "predict", str(speech_wav), "--model", str(model))
    assert code == 1 and "nested too deeply" in line


def test_a_fifo_as_transcript_or_config_does_not_block(capsys, tmp_path, model, speech_wav):
    fifo = tmp_path / "words.txt"
    os.mkfifo(fifo)
    code, line = run_bounded(capsys, "predict", str(speech_wav), "--model", str(model),
                             "--transcript-file", str(fifo), "-o", str(tmp_path / "o.npy"))
    assert code == 1 and "is a FIFO" in line
    (model / ckpt.CONFIG_FILE).unlink()
    os.mkfifo(model / ckpt.CONFIG_FILE)
    code, line = run_bounded(capsys, "info", "--model", str(model))
    assert code == 1 and "is a FIFO" in line


def test_bake_and_curve_readers_check_paths_the_same_way(tmp_path):
    from blender_addon.headless import bake, panel
    from emotalk_core.controls import EmotionControl
    from emotalk_core.export import read_curves

    long = tmp_path / ("x" * 300 + ".wav")
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    for path, needle in ((long, "too long"), (fifo, "is a FIFO")):
        with pytest.raises(AudioError, match=needle):
            bake.check_inputs(bake.BakeSettings(panel={}, audio=(path,)))
        with pytest.raises(AudioError, match=needle):
            panel.panel_values(Controls(emotion=EmotionControl("reference", reference=str(path))))
    os.mkfifo(tmp_path / "curves.npy")
    with pytest.raises(OutputError, match="is a FIFO"):
        read_curves(tmp_path / "curves.npy")
    with pytest.raises(OutputError, match="too long"):
        read_curves(tmp_path / ("y" * 300 + ".csv"))


@pytest.mark.parametrize(("argv", "needle"), [
    (["--person-weights", "3:1e300,4:1e300"], "person weights must be numbers within"),
    (["--person-weights", "3:1e400"], "person weights must be numbers within"),
    (["--person", "99999999999999999999"], "out of range"),
    (["--level", "nan"], "level (intensity) must be a number within [0, 1]"),
])  # fmt: skip
def test_out_of_range_controls_are_one_line(capsys, tmp_path, tiny_model_dir, speech_wav,
                                            argv, needle):
    code, line = run(capsys, "predict", str(speech_wav), "--model", str(tiny_model_dir),
                     "-o", str(tmp_path / "o.npy"), *argv)
    assert code == 1 and needle in line, line


# -- 7. protocol controls say which key is wrong ---------------------------------------------
@pytest.mark.parametrize(("controls", "needle"), [
    ({"emotion": "happy"}, "controls.emotion must be an object, got the text 'happy'"),
    ({"person_weights": [1, 2]}, "person_weights must be an object like"),
    ({"person_weights": {"x": 1}}, 'person_weights keys must be person indices such as "3"'),
    ({"person_weights": {"3": "0.5"}}, "the weight of person '3' must be a number"),
    ({"postprocess": [True]}, "controls.postprocess must be an object, got a list"),
    ({"postprocess": {"smoth": False}}, "controls.postprocess: unknown key(s) 'smoth'"),
    ({"levle": 0.5}, "controls: unknown key(s) 'levle'"),
    ({"level": "high"}, "level (intensity) must be a number"),
    ({"level": True}, "level (intensity) must be a number"),
    ({"person": 2.5}, "person must be an integer"),
    ({"emotion": {"source": "preset", "preset": 3}}, "emotion preset must be a name"),
    ({"emotion": {"strength": "1"}}, "emotion strength must be within [0, 1]"),
    (["level"], "controls must be an object, got a list"),
])  # fmt: skip
def test_bad_controls_name_the_key(controls, needle):
    with pytest.raises(ControlError) as info:
        Controls.from_dict(controls)
    assert needle in str(info.value)
    assert "dictionary update sequence" not in str(info.value)


def test_good_controls_still_parse():
    c = Controls.from_dict({"person_weights": {"3": 0.5, 7: 1}, "level": 0,
                            "emotion": {"source": "preset", "preset": "happy"},
                            "postprocess": None})
    assert c.person_weights == {3: 0.5, 7: 1.0} and c.level == 0 and c.postprocess is None


# -- 8. leftovers ----------------------------------------------------------------------------
def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def partial_name(target: str, pid: int, host: str | None = None) -> str:
    return f".{target}.{host or files._host_tag()}-{pid}-abcd1234{files.PARTIAL_SUFFIX}"


def test_partial_files_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    dead, alive = dead_pid(), os.getppid()
    stale = [partial_name("a.npy", dead), partial_name("take.blend", dead) + ".blend",
             partial_name("take.blend", dead) + ".blend@", partial_name("take.blend", dead)
             + ".blend1"]
    kept = [partial_name("b.npy", alive), partial_name("c.npy", dead, host="000000"),
            ".a.npy.tmp", "a.npy"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x" * 100)
    write_curves(tmp_path / "new.csv", np.zeros((2, 52), np.float32), 30)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["new.csv"])


def test_a_killed_writer_leaves_a_partial_file_that_the_next_run_removes(tmp_path):
    code = f"""
        import os, signal
        from emotalk_core.files import atomic_write
        with atomic_write({str(tmp_path / 'take.npy')!r}) as handle:
            handle.write(b"x" * 1_000_000)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and files.partial_pattern().match(left[0]), left
    write_curves(tmp_path / "other.npy", np.zeros((2, 52), np.float32), 30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.npy"]


def test_sigterm_while_writing_cleans_up_and_keeps_the_old_file(capsys, tmp_path, monkeypatch,
                                                                tiny_model_dir, speech_wav):
    target = tmp_path / "take.csv"
    target.write_text("the previous take\n")
    original = export._timecode

    def terminated(frame: int, fps: float) -> str:
        if frame == 20:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(frame, fps)

    monkeypatch.setattr(export, "_timecode", terminated)
    code, line = run(capsys, "predict", str(speech_wav), "--model", str(tiny_model_dir),
                     "-o", str(target))
    assert code == 128 + signal.SIGTERM and "terminated; nothing was written" in line
    assert target.read_text() == "the previous take\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.csv"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_a_full_or_unwritable_folder_is_found_before_the_model_runs(capsys, tmp_path,
                                                                     monkeypatch,
                                                                     tiny_model_dir,
                                                                     speech_wav):
    import emotalk_core.inference as inference

    def never(*args, **kwargs):
        raise AssertionError("the model ran although the output could not be written")

    monkeypatch.setattr(inference, "Predictor", never)

    class Full:
        f_bavail, f_frsize = 10, 4096

    monkeypatch.setattr(os, "statvfs", lambda path: Full())
    code, line = run(capsys, "predict", str(speech_wav), "--model", str(tiny_model_dir),
                     "-o", str(tmp_path / "o.json"))
    assert code == 1 and "40.0 kB free; the output needs about" in line, line
    monkeypatch.undo()
    monkeypatch.setattr(inference, "Predictor", never)

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    code, line = run(capsys, "predict", str(speech_wav), "--model", str(tiny_model_dir),
                     "-o", str(tmp_path / "o.npy"))
    assert code == 1 and "the file system is read-only" in line, line
    assert list(tmp_path.iterdir()) == []
