"""Training a model with the phonetic stream: the phone-loop cache next to the manifest, the
track in every sample (loop, aligned or none), the lip-contact loss, and continuing from a
model without the stream (model.init_from)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emotalk_core.checkpoint import load_model, save_model
from emotalk_core.controls import Controls
from emotalk_core.inference import Predictor
from emotalk_core.manifest import read_manifest, write_manifest
from emotalk_core.model import EmoTalk
from emotalk_core.phonetics.track import ALIGNED_OFFSET, NO_PHONE, track_classes
from training import phone_tracks
from training.clips import inspect_clip, load_split_clips, read_phone_file
from training.config import ConfigError, DataSection, build_model_config, load_config
from training.dataset import PairDataset, collate
from training.losses import contact_loss
from training.train import init_from_model, run

from .test_training_corpus import make_corpus

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "training" / "configs" / "tiny.toml"
PHONETIC = ["model.phone_input=true", "model.contact_head=true", "loss.contact=0.5",
            "train.log_interval=1", "train.presets=false", "data.batch_size=3"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phonetic_corpus")
    make_corpus(root, persons=2, contents=2, val_contents=1, seconds=(0.5, 0.8))
    entries = read_manifest(root / "manifest.jsonl")
    # Aligned phones for every clip: an "M" then an "AA" across the clip.
    for e in entries:
        path = root / f"{e.clip_id}.phones.json"
        path.write_text(json.dumps([["M", 0.0, 0.2], ["AA", 0.2, 5.0]]))
    write_manifest(root / "manifest.jsonl",
                   [e.__class__(**{**e.__dict__, "phones": Path(f"{e.clip_id}.phones.json")})
                    for e in entries])
    return root


def test_phone_loop_cache_is_made_next_to_the_manifest(corpus):
    manifest = corpus / "manifest.jsonl"
    entries = read_manifest(manifest)
    assert phone_tracks.build(manifest, entries[:2], jobs=1) == []
    folder = phone_tracks.cache_dir(manifest)
    stored = json.loads(phone_tracks.cache_path(folder, entries[0].clip_id).read_text())
    assert stored["phones"] and all(len(p) == 3 for p in stored["phones"])
    seconds = stored["phones"][-1][2]
    assert seconds == pytest.approx(inspect_clip(entries[0], DataSection()).seconds, abs=0.01)


def test_samples_carry_the_loop_track_or_the_aligned_one(corpus):
    manifest = corpus / "manifest.jsonl"
    entries = read_manifest(manifest)
    phone_tracks.build(manifest, entries, jobs=1)
    clips, _ = load_split_clips(manifest, DataSection(), ["train"])
    train = clips["train"]
    folder = phone_tracks.cache_dir(manifest)
    aligned_only = DataSection(aligned_track_probability=1.0, track_dropout=0.0, cross_pairs=False)
    loop_only = DataSection(aligned_track_probability=0.0, track_dropout=0.0, cross_pairs=False)
    m_index = 22 + ALIGNED_OFFSET  # an aligned "M" (22 in PHONE_LABELS)
    sample = PairDataset(train, aligned_only, ("neutral", "happy", "sad"), 0,
                           track_dir=folder)[(0, 0, 0)]
    assert sample.track_a is not None and sample.track_a.shape[0] == sample.target_self.shape[0]
    assert sample.track_a[0] == m_index and sample.track_a[-1] != m_index
    loop = PairDataset(train, loop_only, ("neutral", "happy", "sad"), 0,
                         track_dir=folder)[(0, 0, 0)]
    cached = phone_tracks.cache_path(folder, train[0].clip_id)
    expected = track_classes(read_phone_file(cached), loop.track_a.shape[0])
    np.testing.assert_array_equal(loop.track_a, expected)
    batch = collate([sample, loop])
    assert batch["track_a"].shape[0] == 2 and batch["track_lengths_a"].tolist() == [
        sample.track_a.shape[0], loop.track_a.shape[0]]
    plain = PairDataset(train, loop_only, ("neutral", "happy", "sad"), 0)[(0, 0, 0)]
    assert plain.track_a is None and collate([plain])["track_a"] is None


def test_contact_loss_targets_closed_lips():
    target = torch.zeros(1, 4, 52)
    target[0, 2:, 24] = 0.5  # jawOpen: frames 2, 3 open; 0, 1 closed
    good = torch.tensor([[8.0, 8.0, -8.0, -8.0]])
    assert float(contact_loss(good, target, torch.tensor([4]))) < 0.01
    assert float(contact_loss(-good, target, torch.tensor([4]))) > 4.0
    assert float(contact_loss(-good, target, torch.tensor([2]))) == pytest.approx(
        float(contact_loss(-good[:, :2], target[:, :2], torch.tensor([2]))))


def test_training_with_the_phonetic_stream_continues_a_plain_model(corpus, tmp_path):
    plain_cfg = load_config(TINY, ["train.presets=false"])
    plain = EmoTalk(build_model_config(plain_cfg.model))
    save_model(tmp_path / "plain", plain)
    cfg = load_config(TINY, [*PHONETIC, f'model.init_from="{tmp_path / "plain"}"',
                             "train.steps=3", "train.val_interval=3"])
    result = run(cfg, corpus, tmp_path / "run")
    assert result.step == 3
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert record["contact"] > 0
    loaded = load_model(tmp_path / "run" / "model")
    assert loaded.config.phone_input and loaded.config.contact_head
    predictor = Predictor(loaded, device="cpu")
    audio = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    result = predictor.predict(audio, sample_rate=16000)
    assert result.phone_source == "recognition" and result.values.shape == (30, 52)


def test_init_from_copies_every_tensor_and_starts_the_track_at_zero(tmp_path):
    plain_cfg = load_config(TINY, ["train.presets=false"])
    torch.manual_seed(3)
    plain = EmoTalk(build_model_config(plain_cfg.model))
    torch.nn.init.normal_(plain.head.weight)
    save_model(tmp_path / "plain", plain)
    net = EmoTalk(build_model_config(load_config(TINY, PHONETIC).model))
    line = init_from_model(net, str(tmp_path / "plain"))
    assert "content_encoder.phone_embed.weight" in line
    source, got = plain.state_dict(), net.state_dict()
    assert all(torch.equal(source[k], got[k]) for k in source)
    assert not net.content_encoder.phone_embed.weight.any()
    # With the track's embedding at zero the extended network computes what the plain one did.
    audio = torch.randn(1, 16000)
    lengths = torch.tensor([16000])
    frames = torch.tensor([30])
    track = torch.randint(0, 80, (1, 30))
    with torch.no_grad():
        plain.eval(), net.eval()
        expected = plain.encode_content(audio, lengths, frames)
        torch.testing.assert_close(net.encode_content(audio, lengths, frames, track), expected)


def test_init_from_refuses_a_model_that_does_not_fit(corpus, tmp_path):
    other = load_config(TINY, ["model.content_dim=24", "model.decoder.feature_dim=56",
                               "train.presets=false"])
    save_model(tmp_path / "other", EmoTalk(build_model_config(other.model)))
    cfg = load_config(TINY, [*PHONETIC, f'model.init_from="{tmp_path / "other"}"',
                             "train.steps=1", "train.val_interval=0"])
    with pytest.raises(ConfigError, match="other shapes"):
        run(cfg, corpus, tmp_path / "run")


def test_no_track_frames_embed_to_nothing():
    cfg = load_config(TINY, PHONETIC)
    net = EmoTalk(build_model_config(cfg.model))
    torch.nn.init.normal_(net.content_encoder.phone_embed.weight)
    torch.nn.init.normal_(net.content_encoder.phone_embed.bias)
    none = torch.full((5,), NO_PHONE)
    embedded = net.content_encoder.embed_track(none)
    assert torch.allclose(embedded, net.content_encoder.phone_embed.bias.expand(5, -1))


@pytest.fixture(scope="module")
def phonetic_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phonetic_model")
    cfg = load_config(TINY, PHONETIC)
    torch.manual_seed(0)
    net = EmoTalk(build_model_config(cfg.model))
    torch.nn.init.normal_(net.content_encoder.phone_embed.weight)
    torch.nn.init.normal_(net.head.weight, std=0.1)  # zero at initialisation: make it speak
    save_model(folder, net)
    return folder


def test_predictor_reads_phones_with_progress_and_cancel(phonetic_model):
    from emotalk_core.errors import Cancelled
    from emotalk_core.phonetics.espeak import VoiceSettings, synthesize

    speech = synthesize("Bob made a map.", VoiceSettings("en-us+f2"))
    predictor = Predictor(phonetic_model, device="cpu")
    messages: list[str] = []
    plain = predictor.predict(speech.audio, sample_rate=16000,
                              controls=Controls(recognize_words=False),
                              progress=lambda d, t, m: messages.append(m))
    assert plain.phone_source == "loop" and "reading phones (1/1)" in messages
    aligned = predictor.predict(speech.audio, sample_rate=16000, transcript="Bob made a map.",
                                progress=lambda d, t, m: messages.append(m))
    assert aligned.phone_source == "alignment" and not aligned.warnings
    assert "aligning the transcript" in messages
    recognized = predictor.predict(speech.audio, sample_rate=16000,
                                   progress=lambda d, t, m: messages.append(m))
    assert recognized.phone_source == "recognition" and not recognized.warnings
    assert "recognizing words (1/2)" in messages and "recognizing words (2/2)" in messages
    # The track changes the curves: the embedding is not zero in this model.
    assert not np.allclose(plain.values, aligned.values)
    calls = []

    def cancel_while_reading_phones() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        predictor.predict(speech.audio, sample_rate=16000, cancel=cancel_while_reading_phones)


def test_articulation_shuts_the_lips_where_the_contact_head_is_confident(phonetic_model):
    predictor = Predictor(phonetic_model, device="cpu")
    with torch.no_grad():
        predictor.model.contact_head.weight.zero_()
        predictor.model.contact_head.bias.fill_(8.0)  # always confident the lips touch
        predictor.model.head.weight.zero_()
        predictor.model.head.bias[24] = 0.5  # jawOpen
    audio = np.random.default_rng(1).normal(0, 0.1, 32000).astype(np.float32)
    shut = predictor.predict(audio, sample_rate=16000)
    from emotalk_core.controls import Controls, PostProcess
    from training.metrics import aperture
    loose = predictor.predict(audio, sample_rate=16000,
                              controls=Controls(postprocess=PostProcess(articulate=False)))
    assert np.all(np.abs(aperture(shut.values)) < 0.05)
    assert np.mean(aperture(loose.values)) > 0.3


def test_aligned_bilabials_shut_the_lips_even_when_the_network_is_unsure(phonetic_model):
    from emotalk_core.phonetics.espeak import VoiceSettings, synthesize
    from emotalk_core.phonetics.track import frame_phones
    from training.metrics import aperture

    text = "Bob made a map."
    speech = synthesize(text, VoiceSettings("en-us+f2"))
    predictor = Predictor(phonetic_model, device="cpu")
    with torch.no_grad():
        predictor.model.contact_head.weight.zero_()
        predictor.model.contact_head.bias.fill_(-8.0)  # never confident
        predictor.model.head.weight.zero_()
        predictor.model.head.bias[24] = 0.5  # jawOpen: the mouth stays open
    aligned = predictor.predict(speech.audio, sample_rate=16000, transcript=text)
    loop = predictor.predict(speech.audio, sample_rate=16000,
                             controls=Controls(recognize_words=False))
    recognized = predictor.predict(speech.audio, sample_rate=16000)
    assert aligned.phone_source == "alignment" and recognized.phone_source == "recognition"
    from emotalk_core.phonetics import phone_track

    owners = frame_phones(phone_track(speech.audio, text).phones, aligned.frames)
    bilabial = [i for i, p in enumerate(owners) if p in ("P", "B", "M")]
    others = [i for i, p in enumerate(owners) if p in ("AA", "AE", "AH", "EY")]
    assert len(bilabial) >= 4 and others
    assert np.all(aperture(aligned.values)[bilabial] < 0.05)
    assert np.all(aperture(aligned.values)[others] > 0.3)
    assert np.all(aperture(loop.values) > 0.3)  # the loop's phones alone never shut them
    # recognised words shut the lips as the transcript does (within a frame of it)
    shut = aperture(recognized.values) < 0.05
    assert all(shut[max(0, i - 1): i + 2].any() for i in bilabial)
    inside = [i for i in others if min(abs(i - b) for b in bilabial) > 1]
    assert inside and np.all(aperture(recognized.values)[inside] > 0.3)


def test_weights_can_be_chosen_by_validation_lip_closure(corpus, tmp_path):
    cfg = load_config(TINY, [*PHONETIC, "model.phone_head=true", "train.steps=4",
                             "train.val_interval=1", 'train.select_by="lip_closure_auc"'])
    run(cfg, corpus, tmp_path / "run")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    vals = [json.loads(x) for x in lines if '"val"' in x]
    assert len(vals) == 4 and all("lip_closure_auc" in r for r in vals)
    best_so_far = -1.0
    for r in vals:
        assert r["best"] == (r["lip_closure_auc"] > best_so_far)
        best_so_far = max(best_so_far, r["lip_closure_auc"])
    chosen = max(vals, key=lambda r: (r["lip_closure_auc"], -r["step"]))["step"]
    header = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert header["metadata"]["step"] == chosen


def test_select_by_is_checked():
    with pytest.raises(ConfigError, match="select_by"):
        load_config(TINY, ['train.select_by="vibes"'])


def test_frozen_parts_stay_as_loaded(corpus, tmp_path):
    plain_cfg = load_config(TINY, ["train.presets=false"])
    plain = EmoTalk(build_model_config(plain_cfg.model))
    save_model(tmp_path / "plain", plain)
    cfg = load_config(TINY, [*PHONETIC, f'model.init_from="{tmp_path / "plain"}"',
                             'train.frozen=["decoder", "emotion_encoder"]', "train.steps=2",
                             "train.val_interval=0"])
    run(cfg, corpus, tmp_path / "run")
    trained = load_model(tmp_path / "run" / "model").model.state_dict()
    source = plain.state_dict()
    for prefix in ("decoder.", "emotion_encoder."):
        assert all(torch.equal(source[k], trained[k]) for k in source if k.startswith(prefix))
    assert not all(torch.equal(source[k], trained[k]) for k in source
                   if k.startswith("content_encoder."))


def test_an_unknown_frozen_part_is_refused(corpus, tmp_path):
    from training.config import ConfigError

    cfg = load_config(TINY, ['train.frozen=["decodr"]', "train.steps=1"])
    with pytest.raises(ConfigError, match="no part named 'decodr'") as caught:
        run(cfg, corpus, tmp_path / "run")
    assert "decoder" in caught.value.detail
