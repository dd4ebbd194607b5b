"""The network's stages: channel order, frame counts, masks, decoder, padding equivalence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from emotalk_core import arkit
from emotalk_core.config import CompactEncoderConfig, DecoderConfig, ModelConfig
from emotalk_core.errors import ModelError
from emotalk_core.model import EmoTalk, frame_counts, level_weights, one_hot_weights
from emotalk_core.model import decoder as decoder_module
from emotalk_core.model import wav2vec2 as wav2vec2_module
from emotalk_core.model.decoder import DecoderLayer
from emotalk_core.model.masks import alibi_slopes, periodic_causal_bias

from .conftest import speechlike, tiny_compact


def test_channel_order_is_emotalks():
    assert len(arkit.CHANNELS) == 52
    assert list(arkit.CHANNELS) == sorted(arkit.CHANNELS)
    assert arkit.CHANNELS[8:10] == ("eyeBlinkLeft", "eyeBlinkRight")
    assert arkit.CHANNELS[24] == "jawOpen"
    assert arkit.CHANNELS[0] == "browDownLeft" and arkit.CHANNELS[51] == "tongueOut"
    assert arkit.channel_index("JawOpen") == 24
    assert arkit.channel_index("eyeBlink_R") == 9
    assert arkit.channel_index("mouthRollLower") == arkit.INDEX["mouthRollLower"]
    assert arkit.channel_index("notAChannel") is None


@pytest.mark.parametrize(
    ("samples", "frames"),
    [(32000, 60), (52800, 99), (1, 1), (533, 1), (534, 2), (16000, 30), (16001, 31)],
)
def test_frame_count_formula(samples, frames):
    assert int(frame_counts(torch.tensor([samples]))[0]) == frames


def test_alibi_slopes_for_four_heads():
    assert alibi_slopes(4).tolist() == [1 / 4, 1 / 16, 1 / 64, 1 / 256]


def test_periodic_causal_bias_values():
    slopes = alibi_slopes(4)
    bias = periodic_causal_bias(slopes, 0, 70, 70, period=30)
    for h, slope in enumerate(slopes.tolist()):
        for i, j in [(0, 0), (29, 0), (30, 0), (69, 5), (65, 65)]:
            assert bias[h, i, j].item() == pytest.approx(-slope * ((i - j) // 30))
        assert torch.isinf(bias[h, 3, 4]) and bias[h, 3, 4] < 0
    # A block of rows equals the same rows of the whole mask.
    block = periodic_causal_bias(slopes, 40, 55, 55, period=30)
    assert torch.equal(block, bias[:, 40:55, :55])


def _reference_decoder_layer(ours: DecoderLayer, cfg: DecoderConfig) -> nn.TransformerDecoderLayer:
    ref = nn.TransformerDecoderLayer(cfg.feature_dim, cfg.heads, cfg.ffn_size, cfg.dropout,
                                     batch_first=True)
    ref.load_state_dict(ours.state_dict())
    return ref.eval()


@pytest.mark.parametrize("budget", [1 << 22, 97])  # one block, and many small blocks
def test_decoder_layer_matches_torch_with_full_masks(monkeypatch, budget):
    monkeypatch.setattr(decoder_module, "_BIAS_BUDGET", budget)
    torch.manual_seed(0)
    cfg = DecoderConfig(feature_dim=64, heads=4, ffn_size=48)
    ours = DecoderLayer(cfg).eval()
    ref = _reference_decoder_layer(ours, cfg)
    b, t = 2, 75
    query, memory = torch.randn(b, t, 64), torch.randn(b, t, 64)
    tgt_mask = periodic_causal_bias(alibi_slopes(4), 0, t, t, 30).repeat(b, 1, 1)
    memory_mask = ~torch.eye(t, dtype=torch.bool)  # each frame sees its own memory frame only
    with torch.no_grad():
        expected = ref(query, memory, tgt_mask=tgt_mask, memory_mask=memory_mask)
        got = ours(query, memory)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_decoder_is_causal():
    torch.manual_seed(0)
    layer = DecoderLayer(DecoderConfig(feature_dim=64, heads=4, ffn_size=48)).eval()
    q, m = torch.randn(1, 40, 64), torch.randn(1, 40, 64)
    q2, m2 = q.clone(), m.clone()
    q2[:, 30:] += 5.0
    m2[:, 30:] -= 3.0
    with torch.no_grad():
        a, b = layer(q, m), layer(q2, m2)
    torch.testing.assert_close(a[:, :30], b[:, :30])
    assert not torch.allclose(a[:, 30:], b[:, 30:])


def _randomize_head(net: EmoTalk) -> EmoTalk:
    torch.manual_seed(1)
    nn.init.normal_(net.head.weight, std=0.5)
    nn.init.normal_(net.head.bias, std=0.1)
    return net.eval()


def _batch(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([c.shape[0] for c in clips])
    audio = torch.zeros(len(clips), int(lengths.max()))
    for i, c in enumerate(clips):
        audio[i, : c.shape[0]] = c
    return audio, lengths


@pytest.mark.parametrize(
    "kind", ["tiny_wav2vec2_config", "tiny_compact_config", "tiny_compact_utterance_config",
             "tiny_compact_level_config"])
def test_clip_alone_equals_clip_in_padded_batch(kind, request):
    torch.manual_seed(0)
    net = _randomize_head(EmoTalk(request.getfixturevalue(kind)))
    clips = [torch.from_numpy(speechlike(s, seed=i)) for i, s in enumerate((1.3, 2.2, 0.7))]
    audio, lengths = _batch(clips)
    level = level_weights(torch.tensor([1.0, 0.0, 0.5]))
    person = one_hot_weights(torch.tensor([0, 5, 23]), 24)
    with torch.no_grad():
        batched, batched_logits = net(audio, lengths, level, person)
        for i, clip in enumerate(clips):
            alone, logits = net(clip[None], lengths[i : i + 1], level[i : i + 1],
                                person[i : i + 1])
            t = alone.shape[1]
            torch.testing.assert_close(batched[i, :t], alone[0], atol=2e-5, rtol=1e-4)
            assert torch.all(batched[i, t:] == 0)
            torch.testing.assert_close(batched_logits[i], logits[0], atol=2e-5, rtol=1e-4)


def test_utterance_normalisation_keeps_loudness_and_drops_the_channel():
    from emotalk_core.model.compact import CompactBackbone

    norms = {kind: CompactBackbone(tiny_compact(kind)).eval() for kind in ("frame", "utterance")}
    mel = torch.randn(1, 50, 40)
    mel[:, 25:] = mel[:, :25] - 6.0  # the same spectra, 6 nepers quieter
    valid = torch.ones(1, 50, dtype=torch.bool)
    with torch.no_grad():
        frame = norms["frame"].normalise(mel, valid)
        utterance = norms["utterance"].normalise(mel, valid)
        # a fixed channel colouring (a gain per mel bin) changes nothing per utterance
        coloured = norms["utterance"].normalise(mel + torch.linspace(-3, 3, 40), valid)
    torch.testing.assert_close(frame[:, 25:], frame[:, :25])  # per frame: loudness is gone
    quieter = (utterance[:, :25] - utterance[:, 25:]).mean()
    assert quieter > 1.0  # per utterance: the quiet half stays quiet
    torch.testing.assert_close(coloured, utterance, atol=1e-4, rtol=1e-4)
    assert utterance.mean().abs() < 1e-4 and (utterance.square().mean() - 1).abs() < 1e-3
    with pytest.raises(ModelError, match="feature_norm must be one of"):
        tiny_compact("batch")


def test_frame_level_channel_keeps_loudness_but_not_gain():
    from emotalk_core.model.compact import frame_level

    mel = torch.randn(1, 50, 40)
    mel[:, 25:] = mel[:, :25] - 6.0  # the same spectra, 6 nepers quieter
    valid = torch.ones(1, 50, dtype=torch.bool)
    level = frame_level(mel, valid)[0, :, 0]
    assert level[:25].mean() - level[25:].mean() > 1.5  # the quiet half reads quiet
    torch.testing.assert_close(frame_level(mel + 4.0, valid), frame_level(mel, valid))
    padded = torch.cat([mel, torch.full((1, 10, 40), 9.0)], 1)  # padding must not count
    mask = torch.cat([valid, torch.zeros(1, 10, dtype=torch.bool)], 1)
    out = frame_level(padded, mask)
    torch.testing.assert_close(out[:, :50], frame_level(mel, valid))
    assert torch.all(out[:, 50:] == 0)


def test_frequency_masking_acts_in_training_only():
    from emotalk_core.model.compact import CompactBackbone

    cfg = CompactEncoderConfig(n_mels=40, conv_channels=32, hidden_size=32, num_layers=1,
                               num_heads=2, ffn_size=64, freq_masks=2, freq_mask_bins=8)
    encoder = CompactBackbone(cfg)
    audio, lengths = torch.randn(3, 8000), torch.tensor([8000, 8000, 8000])
    torch.manual_seed(0)
    masked = encoder.mask_bands(torch.ones(3, 10, 40))
    zeroed = (masked == 0).all(1)  # (B, n_mels): whole bands, all frames
    assert ((masked == 0) | (masked == 1)).all() and zeroed.any()
    assert all(int(z.sum()) <= 16 for z in zeroed) and not torch.equal(zeroed[0], zeroed[1])
    encoder.eval()
    with torch.no_grad():
        one, two = encoder.features_50hz(audio, lengths), encoder.features_50hz(audio, lengths)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
    encoder.train()
    with torch.no_grad():
        three = encoder.features_50hz(audio, lengths)
    assert not all(torch.equal(a, b) for a, b in zip(one, three, strict=True))
    with pytest.raises(ModelError, match="freq_mask_bins"):
        CompactEncoderConfig(n_mels=40, freq_masks=1, freq_mask_bins=41)


def test_blockwise_conv_front_end_is_exact(monkeypatch, tiny_wav2vec2_config):
    torch.manual_seed(0)
    net = EmoTalk(tiny_wav2vec2_config).eval()
    audio = torch.from_numpy(speechlike(3.0))[None]
    lengths = torch.tensor([audio.shape[1]])
    with torch.no_grad():
        whole = net.content_encoder.conv_features(audio, lengths)[0]
        monkeypatch.setattr(wav2vec2_module, "_CONV_BLOCK_FRAMES", 7)
        blocked = net.content_encoder.conv_features(audio, lengths)[0]
    assert whole.shape == blocked.shape == (net.content_encoder.conv_frames(48000), 32)
    torch.testing.assert_close(blocked, whole, atol=1e-5, rtol=1e-5)


def test_untrained_head_starts_at_the_neutral_face(tiny_compact_config):
    net = EmoTalk(tiny_compact_config).eval()
    audio = torch.from_numpy(speechlike(1.0))[None]
    with torch.no_grad():
        out, _ = net(audio, torch.tensor([16000]), level_weights(torch.tensor([1.0])),
                     one_hot_weights(torch.tensor([0]), 24))
    assert out.shape == (1, 30, 52)
    assert torch.count_nonzero(out) == 0


def test_training_forward_shapes_and_gradients(tiny_compact_config):
    torch.manual_seed(0)
    net = _randomize_head(EmoTalk(tiny_compact_config)).train()
    a, la = _batch([torch.from_numpy(speechlike(1.0, 1)), torch.from_numpy(speechlike(0.8, 2))])
    b, lb = _batch([torch.from_numpy(speechlike(1.1, 3)), torch.from_numpy(speechlike(0.9, 4))])
    cross_frames, self_frames = torch.tensor([31, 24]), torch.tensor([30, 24])
    out = net.training_forward(a, la, b, lb, cross_frames, self_frames,
                               level_weights(torch.tensor([0.0, 1.0])),
                               one_hot_weights(torch.tensor([1, 2]), 24))
    assert out.cross.shape == (2, 31, 52) and out.self_.shape == (2, 30, 52)
    assert out.emotion_logits.shape == (2, 3)
    assert torch.all(out.cross[1, 24:] == 0) and torch.all(out.self_[1, 24:] == 0)
    (out.cross.square().mean() + out.self_.square().mean() + out.emotion_logits.sum()).backward()
    assert net.content_encoder.conv1.weight.grad is not None
    assert net.emotion_encoder.classifier.out_proj.weight.grad is not None


def test_config_round_trip_and_strictness(tiny_wav2vec2_config, tiny_compact_config):
    for cfg in (tiny_wav2vec2_config, tiny_compact_config):
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    data = tiny_compact_config.to_dict()
    data["decoder"]["layerz"] = 2
    with pytest.raises(ModelError, match="unknown keys: layerz"):
        ModelConfig.from_dict(data)
    data = tiny_compact_config.to_dict()
    data["content_encoder"]["kind"] = "whisper"
    with pytest.raises(ModelError, match="unknown kind 'whisper'"):
        ModelConfig.from_dict(data)
    data = tiny_compact_config.to_dict()
    data["content_dim"] = 500
    with pytest.raises(ModelError, match="must equal decoder.feature_dim"):
        ModelConfig.from_dict(data)


def test_vocal_tract_warp_moves_formants_in_training_only():
    from emotalk_core.model.compact import CompactBackbone, warp_frequencies

    power = torch.zeros(3, 201, 2)
    power[:, 50] = 1.0  # one formant at bin 50 (2 kHz)
    warped = warp_frequencies(power, torch.tensor([1.0, 1.2, 0.8]))
    torch.testing.assert_close(warped[0], power[0])  # factor 1: unchanged
    assert int(warped[1, :, 0].argmax()) == 60 and int(warped[2, :, 0].argmax()) == 40
    flat = warp_frequencies(torch.ones(2, 201, 1), torch.tensor([1.15, 0.85]))
    torch.testing.assert_close(flat, torch.ones(2, 201, 1))  # no band lost or invented
    cfg = CompactEncoderConfig(n_mels=40, conv_channels=32, hidden_size=32, num_layers=1,
                               num_heads=2, ffn_size=64, vtlp=0.2, dropout=0.0)
    encoder = CompactBackbone(cfg)
    audio, lengths = torch.randn(2, 8000), torch.tensor([8000, 8000])
    with torch.no_grad():
        encoder.eval()
        one, two = encoder.features_50hz(audio, lengths), encoder.features_50hz(audio, lengths)
        encoder.train()
        three = encoder.features_50hz(audio, lengths)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(one, three, strict=True))
    with pytest.raises(ModelError, match="vtlp must be within"):
        CompactEncoderConfig(vtlp=0.6)


def test_phone_head_classifies_the_content_features(tiny_compact_config):
    import dataclasses

    from emotalk_core.config import PHONE_LABELS

    cfg = dataclasses.replace(tiny_compact_config, phone_labels=PHONE_LABELS)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    torch.manual_seed(0)
    net = EmoTalk(cfg).train()
    a, la = _batch([torch.from_numpy(speechlike(1.0, 1)), torch.from_numpy(speechlike(0.8, 2))])
    out = net.training_forward(a, la, a, la, torch.tensor([30, 24]), torch.tensor([30, 24]),
                               level_weights(torch.tensor([0.0, 1.0])),
                               one_hot_weights(torch.tensor([1, 2]), 24))
    assert out.phone_logits.shape == (2, 30, len(PHONE_LABELS))
    out.phone_logits[:, :, 7].sum().backward()  # the phone loss reaches the content encoder
    assert net.content_encoder.conv1.weight.grad.abs().sum() > 0
    assert net.emotion_encoder.conv1.weight.grad is None
    plain = EmoTalk(tiny_compact_config)
    assert plain.phone_head is None and "phone_head.weight" not in plain.state_dict()
    assert plain.training_forward(a, la, a, la, torch.tensor([30, 24]), torch.tensor([30, 24]),
                                  level_weights(torch.tensor([0.0, 1.0])),
                                  one_hot_weights(torch.tensor([1, 2]), 24)).phone_logits is None
    with pytest.raises(ModelError, match="phone_labels must not repeat"):
        dataclasses.replace(tiny_compact_config, phone_labels=("SIL", "M", "M"))


def test_cepstral_smoothing_keeps_the_envelope_and_drops_the_harmonics():
    from emotalk_core.model.compact import CompactBackbone, cepstral_smoother

    torch.testing.assert_close(torch.from_numpy(cepstral_smoother(40, 40)), torch.eye(40),
                               atol=1e-5, rtol=0)
    smoother = torch.from_numpy(cepstral_smoother(40, 12))
    bins = torch.arange(40.0)
    envelope = 3.0 * torch.exp(-(((bins - 12) / 6) ** 2))  # one broad formant (log domain)
    ripple = 0.5 * torch.cos(torch.pi * bins)  # the finest detail: alternate bins
    torch.testing.assert_close(envelope @ smoother, envelope, atol=0.15, rtol=0)
    smoothed = ripple @ smoother
    assert smoothed[4:-4].abs().max() < 0.05 and smoothed.norm() < 0.15 * ripple.norm()
    cfg = CompactEncoderConfig(n_mels=40, conv_channels=32, hidden_size=32, num_layers=1,
                               num_heads=2, ffn_size=64, cepstral_coefficients=12)
    assert CompactBackbone(cfg).smoother.shape == (40, 40)
    with pytest.raises(ModelError, match="cepstral_coefficients must be within"):
        CompactEncoderConfig(n_mels=40, cepstral_coefficients=41)


def test_mel_filterbank_can_stop_below_nyquist():
    from emotalk_core.model.compact import CompactBackbone, mel_filterbank

    full, low = mel_filterbank(40, 400, 16000), mel_filterbank(40, 400, 16000, 4000.0)
    bins = np.fft.rfftfreq(400, 1 / 16000)
    assert low[:, bins > 4000].sum() == 0 and full[:, bins > 6000].sum() > 0
    assert (low.sum(1) > 0).all()  # no empty filter
    np.testing.assert_array_equal(mel_filterbank(40, 400, 16000, 8000.0), full)
    cfg = CompactEncoderConfig(n_mels=40, conv_channels=32, hidden_size=32, num_layers=1,
                               num_heads=2, ffn_size=64, f_max=4000.0, dropout=0.0)
    encoder = CompactBackbone(cfg)
    np.testing.assert_array_equal(encoder.mel.filters.numpy(), low)
    with pytest.raises(ModelError, match="f_max must be within"):
        CompactEncoderConfig(f_max=9000.0)
