"""Train EmoTalk: `python -m training.train --config CONFIG --data DIR --out RUN`.

One process per device. CUDA runs under bf16 or fp16 autocast (fp16 with a GradScaler), CPU in
float32. Several GPUs or nodes: launch with torchrun, which sets the rank variables this module
reads; each process takes every world-th batch of the same length-bucketed epoch and
DistributedDataParallel averages the gradients (gloo on CPU, NCCL on GPUs).

The run folder:

    RUN/config.toml, config.json     the config as given, and as resolved (with overrides)
    RUN/metrics.jsonl                one object per logged step, and per validation ("split")
    RUN/tensorboard/                 the same curves (when tensorboard is installed)
    RUN/checkpoints/step_N/          model/ (native model folder), trainer.pt (optimiser,
                                     schedule, scaler, data position, best score), rng_rankR.pt
    RUN/model/                       the best model by validation loss, with emotion presets:
                                     `emotalk predict --model RUN/model` loads it
    RUN/skipped.json                 clips skipped as unusable, with the reason for each

Exact resume: the data order and augmentation are functions of (seed, epoch, clip), and a
checkpoint holds every random state (python, numpy, torch CPU and CUDA per rank) and the data
position, so `--resume` continues bit-identically (on the same hardware and process count).
Ctrl-C or SIGTERM (a cluster's pre-emption notice) finishes the current step, saves a checkpoint
and exits; a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emotalk_core.checkpoint import (
    WEIGHT_NORM_RENAMES,
    WEIGHTS_FILE,
    build_model,
    load_state_strict,
    read_header,
    save_model,
)
from emotalk_core.config import ModelConfig
from emotalk_core.errors import EmoTalkError, report_error
from emotalk_core.files import atomic_write
from emotalk_core.manifest import ManifestEntry, write_manifest
from emotalk_core.model import EmoTalk, level_weights, one_hot_weights

from . import metrics as M
from . import phone_tracks
from .clips import IGNORE_LABEL, ClipInfo, DataError, Skipped, load_split_clips, subsample
from .config import (
    ConfigError,
    ModelSection,
    TrainConfig,
    build_model_config,
    load_config,
)
from .dataset import BucketBatches, PairDataset, collate, train_loader, validation_batches
from .losses import PARTS, training_loss
from .metrics import EYE_CHANNELS, LIP_CHANNELS

PRESET_CLIPS_PER_EMOTION = 200  # the prototype is a mean: more clips change it little
ENCODER_PREFIXES = ("content_encoder.", "emotion_encoder.")
CLASSIFIER_PREFIX = "emotion_encoder.classifier."


@dataclass
class RunResult:
    step: int
    stopped: str  # "steps" | "max_steps" | "signal"
    best_val_loss: float | None
    run_dir: Path
    skipped: list[Skipped] = field(default_factory=list)


# -- processes ------------------------------------------------------------------------------------
@dataclass
class Dist:
    """This process's place among torchrun's processes (world 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, device: str) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and device != "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available", "use --device cpu")
        dev = torch.device("cuda", local) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(dev)
        if world > 1:
            torch.distributed.init_process_group("nccl" if cuda else "gloo")
        return cls(rank, world, local, dev)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum_(self, values: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            values = values.to(self.device)
            torch.distributed.all_reduce(values)
        return values.cpu()

    def any(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        return bool(self.sum_(torch.tensor([float(flag)]))[0] > 0)

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class StopSignals:
    """SIGINT/SIGTERM set a flag that the loop checks after each step; a second SIGINT aborts."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
              "(Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# -- model ----------------------------------------------------------------------------------------
class _TrainingStep(nn.Module):
    """DDP wraps `forward`; this routes it to EmoTalk.training_forward."""

    def __init__(self, net: EmoTalk):
        super().__init__()
        self.net = net

    def forward(self, *args: torch.Tensor):
        return self.net.training_forward(*args)


def build_network(section: ModelSection, source: str, log: Callable[[str], None]) -> EmoTalk:
    """The network, with pretrained wav2vec2 weights loaded and conv front ends frozen."""
    net = EmoTalk(build_model_config(section, source))
    if section.init_from:
        log(init_from_model(net, section.init_from))
    for which in ("content", "emotion"):
        folder = getattr(section, f"pretrained_{which}")
        if folder:
            encoder = getattr(net, f"{which}_encoder")
            log(load_pretrained_wav2vec2(encoder, Path(folder).expanduser(), which))
        elif section.encoder == "wav2vec2":
            log(f"note: the {which} encoder starts from random weights (no "
                f"model.pretrained_{which}); the paper fine-tunes pretrained wav2vec2 models")
    freeze_front_ends(net)
    return net


def init_from_model(net: EmoTalk, folder: str) -> str:
    """Copy a model folder's weights into `net`. Every tensor of the source must exist in
    `net` with the same shape (anything else is a ConfigError listing the keys); tensors only
    `net` has keep their initialisation. Returns a line for the log."""
    from emotalk_core.checkpoint import load_model

    source = load_model(folder).model.state_dict()
    target = net.state_dict()
    unexpected = sorted(k for k in source if k not in target)
    reshaped = sorted(k for k in source if k in target and source[k].shape != target[k].shape)
    if unexpected or reshaped:
        raise ConfigError(f"model.init_from = {folder!r} does not fit this network: "
                          + "; ".join(filter(None, [
                              f"unknown here: {', '.join(unexpected)}" if unexpected else "",
                              f"other shapes: {', '.join(reshaped)}" if reshaped else ""])),
                          "init_from needs the same network plus new inputs or heads only")
    net.load_state_dict({**target, **{k: v.float() for k, v in source.items()}})
    new = sorted(k for k in target if k not in source)
    return (f"started from {folder} ({len(source)} tensors); new: "
            f"{', '.join(new) if new else 'none'}")


def freeze_front_ends(net: EmoTalk) -> None:
    """wav2vec2's convolutional feature encoder stays frozen, as in the paper (and as wav2vec2
    fine-tuning always does): it is generic acoustics, and fine-tuning it on little data hurts."""
    for encoder in (net.content_encoder, net.emotion_encoder):
        w2v = getattr(encoder, "wav2vec2", None)
        if w2v is not None:
            w2v.freeze_feature_encoder()


def freeze_parts(net: EmoTalk, names: tuple[str, ...]) -> None:
    """Keep the named top-level parts of the network (`train.frozen`) as they were loaded: no
    gradients, so the optimiser never sees them. Unknown names are a ConfigError."""
    parts = {name for name, module in net.named_children()
             if any(True for _ in module.parameters())}
    unknown = [n for n in names if n not in parts]
    if unknown:
        raise ConfigError(f"train.frozen: the network has no part named "
                          f"{', '.join(map(repr, unknown))}",
                          f"use some of {', '.join(sorted(parts))}")
    for name in names:
        getattr(net, name).requires_grad_(False)


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of a transformers model folder (safetensors or .bin, sharded or not)."""
    from safetensors.torch import load_file

    def load(name: str) -> dict[str, torch.Tensor]:
        if name.endswith(".safetensors"):
            return load_file(str(folder / name))
        return torch.load(folder / name, map_location="cpu", weights_only=True)

    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        try:
            if (folder / single).is_file():
                return load(single)
            if (folder / index).is_file():
                shards = sorted(set(json.loads((folder / index).read_text())["weight_map"]
                                    .values()))
                state: dict[str, torch.Tensor] = {}
                for shard in shards:
                    state.update(load(shard))
                return state
        except Exception as exc:  # corrupt files raise many types
            raise ConfigError(f"cannot read the weights in {folder}: {exc}") from exc
    raise ConfigError(f"{folder} holds no model.safetensors or pytorch_model.bin",
                      "download the full model folder (config.json and weights)")


def load_pretrained_wav2vec2(encoder: nn.Module, folder: Path, which: str) -> str:
    """Load a HF wav2vec2 checkpoint (Wav2Vec2Model, ...ForCTC or a speech classifier with
    `classifier.dense/out_proj`) into our encoder. Every backbone tensor must fit; a classifier
    whose label count differs is re-initialised (our labels are not the checkpoint's)."""
    state = read_hf_weights(folder)
    renamed = {}
    for key, value in state.items():
        for old, new in WEIGHT_NORM_RENAMES:
            if key.endswith("." + old):
                key = key[: -len(old)] + new
        renamed[key] = value
    if not any(k.startswith("wav2vec2.") for k in renamed):
        renamed = {f"wav2vec2.{k}": v for k, v in renamed.items()}
    own = encoder.state_dict()
    usable = {k: v for k, v in renamed.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    optional = [k for k in missing if k.startswith("classifier.")
                or k == "wav2vec2.masked_spec_embed"]
    fatal = sorted(set(missing) - set(optional))
    if fatal:
        raise ConfigError(f"model.pretrained_{which} = {folder} does not fit the encoder: "
                          f"{len(fatal)} tensors missing or wrongly shaped, e.g. "
                          f"{', '.join(fatal[:5])}",
                          "the folder must hold a wav2vec2 model of the architecture in its "
                          "config.json")
    encoder.load_state_dict(usable, strict=False)
    note = f"; re-initialised: {', '.join(optional)}" if optional else ""
    return f"loaded {len(usable)} pretrained tensors into the {which} encoder from {folder}{note}"


def parameter_groups(net: EmoTalk, lr: float, weight_decay: float, encoder_lr_scale: float
                     ) -> list[dict[str, Any]]:
    """AdamW groups: encoders (scaled rate) vs the rest, and no weight decay on biases and norm
    gains (decaying them only shrinks scales the next layer must undo)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        key = (is_encoder_parameter(name), p.ndim >= 2)
        groups.setdefault(key, []).append(p)
    return [{"params": params, "lr": lr * (encoder_lr_scale if enc else 1.0),
             "weight_decay": weight_decay if decay else 0.0, "encoder": enc}
            for (enc, decay), params in sorted(groups.items())]


def is_encoder_parameter(name: str) -> bool:
    """Encoder backbones; the emotion classifier head is not an encoder (it is never frozen)."""
    return name.startswith(ENCODER_PREFIXES) and not name.startswith(CLASSIFIER_PREFIX)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to `min_ratio` at `total` steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# -- random states --------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# -- the trainer ----------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: TrainConfig, data_dir: Path, out: Path, dist: Dist,
                 max_steps: int | None, on_step: Callable[[int], None] | None = None):
        self.cfg, self.data_dir, self.out, self.dist = cfg, data_dir, out, dist
        self.target = min(cfg.train.steps, max_steps) if max_steps else cfg.train.steps
        self.on_step = on_step
        self.step = 0
        self.epoch, self.position = 0, 0
        self.best_val: float | None = None  # validation loss of the chosen step
        self.best_score: float | None = None  # train.select_by's score there (lower is better)
        self.best_step: int | None = None
        self.skipped: dict[str, str] = {}
        self.nonfinite = 0
        # Sums since the last log: loss, parts, grad norm, share of cross pairs, steps.
        self.accum = torch.zeros(len(PARTS) + 4, dtype=torch.float64, device=dist.device)
        self.started = time.monotonic()
        self.writer = None

    # .. setup ..
    def log(self, message: str) -> None:
        if self.dist.main:
            print(message, file=sys.stderr, flush=True)

    def setup(self, resume: bool) -> None:
        cfg = self.cfg
        self.ckpt_dir = self.out / "checkpoints"
        latest = latest_checkpoint(self.ckpt_dir)
        if latest is not None and not resume:
            raise ConfigError(f"{self.out} already holds a run (checkpoints up to "
                              f"{latest.name})", "pass --resume to continue it, or another --out")
        seed_everything(cfg.seed)
        self._setup_data()
        resuming = resume and latest is not None
        if resuming:  # the checkpoint says what the network is: no pretrained folders needed
            self.net = build_model(ModelConfig.from_dict(read_header(latest / "model")["config"]))
            freeze_front_ends(self.net)
        else:
            self.net = build_network(cfg.model, cfg.source or "<config>", self.log)
        freeze_parts(self.net, cfg.train.frozen)
        self.net.to(self.dist.device)
        torch.manual_seed(cfg.seed * 1009 + self.dist.rank)  # dropout differs across ranks
        self._setup_optim()
        self._setup_precision()
        if resuming:
            self._resume(latest)
        elif self.dist.main:
            self._write_run_config()
        self._wrap()
        self.writer = self._tensorboard()

    def _setup_data(self) -> None:
        cfg, d = self.cfg, self.cfg.data
        manifest = self.data_dir / d.manifest
        splits = [d.train_split] + ([d.val_split] if self.cfg.train.val_interval else [])
        try:
            clips, skipped = load_split_clips(manifest, d, splits)
        except DataError as exc:
            if f"split {d.val_split!r}" not in exc.message:
                raise
            raise DataError(exc.message, "add validation clips to the manifest, or train "
                              "without validation: --set train.val_interval=0") from exc
        for s in skipped:
            self.skipped[s.clip_id] = s.reason
        model_cfg = build_model_config(cfg.model, cfg.source or "<config>", read_pretrained=False)
        labels, phones = model_cfg.emotion_labels, model_cfg.phone_labels
        self.train_clips = clips[d.train_split]
        track_dir = self._phone_loop_tracks(manifest, clips) if model_cfg.phone_input else None
        self.train_set = PairDataset(self.train_clips, d, labels, cfg.seed, cfg.augment,
                                       phone_labels=phones, track_dir=track_dir)
        keys, lengths = self.train_set.epoch_items()
        self.batches = BucketBatches(lengths, d.batch_size, d.bucket_batches, cfg.seed,
                                       self.dist.rank, self.dist.world, keys=keys)
        self.val_set = None
        if self.cfg.train.val_interval:
            val = subsample(clips[d.val_split], d.val_max_clips)
            self.val_set = PairDataset(val, d, labels, cfg.seed, None,
                                         donors=self.train_clips + val, train=False,
                                         phone_labels=phones, track_dir=track_dir)
        self.log(f"data: {len(self.train_clips)} training clips "
                 f"({sum(c.seconds for c in self.train_clips) / 3600:.2f} h, "
                 f"{self.train_set.pairs.cross_fraction():.0%} can form cross pairs), "
                 f"{len(self.val_set) if self.val_set else 0} validation clips, "
                 f"{len(skipped)} skipped; {self.batches.batches_per_epoch()} batches per epoch")
        for s in skipped[:20]:
            self.log(f"  skipped {s.clip_id}: {s.reason}")
        if len(skipped) > 20:
            self.log(f"  ... and {len(skipped) - 20} more (see {self.out / 'skipped.json'})")

    def _phone_loop_tracks(self, manifest: Path, clips: dict[str, list[ClipInfo]]) -> Path:
        """The phone-loop cache of the clips (made where missing, by the main process; the
        other ranks wait for it)."""
        if self.dist.main:
            entries = [c.entry for split in clips.values() for c in split]
            self.log(f"phone-loop tracks: {phone_tracks.cache_dir(manifest)}")
            for problem in phone_tracks.build(manifest, entries, self.cfg.data.num_workers or 1):
                self.log(f"  no phone track: {problem}")
        self.dist.barrier()
        return phone_tracks.cache_dir(manifest)

    def _setup_optim(self) -> None:
        o = self.cfg.optim
        self.groups = parameter_groups(self.net, o.lr, o.weight_decay, o.encoder_lr_scale)
        self.params = [p for g in self.groups for p in g["params"]]
        self.encoder_params = [p for g in self.groups if g["encoder"] for p in g["params"]]
        self.optimizer = torch.optim.AdamW(self.groups, lr=o.lr, betas=o.betas, eps=o.eps)
        total, warmup, floor = self.cfg.train.steps, o.warmup_steps, o.min_lr_ratio
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup, total, floor))

    def _setup_precision(self) -> None:
        precision = self.cfg.train.precision if self.dist.device.type == "cuda" else "fp32"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if self.dist.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.precision = precision

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.amp_dtype)

    def _wrap(self) -> None:
        module = _TrainingStep(self.net)
        if self.dist.world > 1:
            # wav2vec2's layerdrop and SpecAugment leave some parameters unused in some steps.
            unused = self.cfg.model.encoder == "wav2vec2"
            ids = [self.dist.local_rank] if self.dist.device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(module, device_ids=ids,
                                                         find_unused_parameters=unused)
        self.module = module

    def _tensorboard(self):
        if not self.dist.main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log("note: tensorboard is not installed; curves go to metrics.jsonl only "
                     "(pip install 'emotalk-blender[train]')")
            return None
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step + 1)

    def _write_run_config(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.cfg.source and Path(self.cfg.source).is_file():
            shutil.copyfile(self.cfg.source, self.out / "config.toml")
        write_text(self.out / "config.json", json.dumps(self.cfg.to_dict(), indent=2))
        (self.out / "metrics.jsonl").write_text("")

    # .. resume ..
    def _resume(self, folder: Path) -> None:
        from safetensors.torch import load_file

        self._compare_run_config()
        state = torch.load(folder / "trainer.pt", map_location="cpu", weights_only=False)
        if state["world"] != self.dist.world:
            raise ConfigError(f"{folder} was written by {state['world']} processes, this run has "
                              f"{self.dist.world}", "resume with the same number of processes")
        weights = load_file(str(folder / "model" / WEIGHTS_FILE))
        load_state_strict(self.net, weights, str(folder / "model" / WEIGHTS_FILE))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.best_val, self.best_step = state["best_val"], state["best_step"]
        self.best_score = state.get("best_score", self.best_val)
        self.skipped.update(state["skipped"])
        self.nonfinite = state["nonfinite"]
        self.accum = torch.tensor(state["accum"], dtype=torch.float64, device=self.dist.device)
        set_rng_state(torch.load(folder / f"rng_rank{self.dist.rank}.pt", map_location="cpu",
                                 weights_only=False))
        if self.dist.main:
            truncate_metrics(self.out / "metrics.jsonl", self.step)
        self.log(f"resumed from {folder} at step {self.step}")

    def _compare_run_config(self) -> None:
        """A changed [model] section is an error (the checkpoint fits one network; where the
        pretrained folders are does not matter any more); other changes are reported."""
        path = self.out / "config.json"
        if not path.is_file():
            return
        saved, now = json.loads(path.read_text()), self.cfg.to_dict()
        moved = ("pretrained_content", "pretrained_emotion")
        if ({k: v for k, v in saved["model"].items() if k not in moved}
                != {k: v for k, v in now["model"].items() if k not in moved}):
            raise ConfigError(f"the [model] section differs from the run's ({path}); a "
                              "checkpoint only fits the network it was made for")
        changed = sorted(f"{s}.{k}" for s in now if isinstance(now[s], dict) and s != "model"
                         for k in now[s] if saved.get(s, {}).get(k) != now[s][k])
        if changed:
            self.log(f"note: resuming with changed settings: {', '.join(changed)} "
                     "(the continuation is no longer exact)")

    # .. checkpoints ..
    def save_checkpoint(self) -> Path:
        final = self.ckpt_dir / f"step_{self.step}"
        tmp = self.ckpt_dir / f".step_{self.step}.tmp"
        if self.dist.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.dist.barrier()
        torch.save(rng_state(), tmp / f"rng_rank{self.dist.rank}.pt")
        self.dist.barrier()
        if self.dist.main:
            save_model(tmp / "model", self.net, metadata=self._metadata(self.step))
            torch.save(self._trainer_state(), tmp / "trainer.pt")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in list_checkpoints(self.ckpt_dir)[: -self.cfg.train.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.dist.barrier()
        return final

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step, "epoch": self.epoch, "position": self.position,
            "world": self.dist.world, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "best_val": self.best_val, "best_step": self.best_step,
            "best_score": self.best_score, "skipped": self.skipped,
            "nonfinite": self.nonfinite, "accum": self.accum.tolist(),
            "sampler": {"seed": self.cfg.seed, "epoch": self.epoch, "position": self.position},
        }  # fmt: skip

    def _metadata(self, step: int, val_loss: float | None = None) -> dict[str, Any]:
        return {"trained_by": "training.train", "step": step, "val_loss": val_loss,
                "config": self.cfg.source, "data": str(self.data_dir)}

    # .. the loop ..
    def batches_from_loader(self) -> Iterator[dict[str, Any]]:
        loader = train_loader(self.train_set, self.batches, self.epoch, self.position,
                                self.cfg.data.num_workers)
        yield from loader

    def train(self, signals: StopSignals) -> RunResult:
        from tqdm import tqdm

        cfg = self.cfg.train
        bar = tqdm(total=self.target, initial=self.step, desc="training", unit="step",
                   disable=None if self.dist.main else True, dynamic_ncols=True)
        stopped = "max_steps" if self.target < cfg.steps else "steps"
        batches = self.batches_from_loader()
        validated = saved = self.step
        self.module.train()
        try:
            while self.step < self.target:
                self.train_step(next(batches))
                bar.update(1)
                if self.step % cfg.log_interval == 0:
                    record = self.log_train()
                    bar.set_postfix(loss=f"{record['loss']:.4g}")
                if cfg.val_interval and self.step % cfg.val_interval == 0:
                    self.validate()
                    validated = self.step
                if self.step % cfg.checkpoint_interval == 0:
                    self.save_checkpoint()
                    saved = self.step
                if self.on_step is not None:
                    self.on_step(self.step)
                if self.dist.any(signals.received is not None):
                    stopped = "signal"
                    break
        finally:
            batches.close()  # stops the loader's worker processes now
            bar.close()
        if stopped != "signal" and cfg.val_interval and validated != self.step:
            self.validate()
        if saved != self.step:
            self.save_checkpoint()
        if stopped != "signal" and not cfg.val_interval and self.dist.main:
            save_model(self.out / "model", self.net, metadata=self._metadata(self.step))
        return RunResult(self.step, stopped, self.best_val, self.out)

    def train_step(self, batch: dict[str, Any]) -> None:
        dev = self.dist.device
        b = {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v
             for k, v in batch.items()}
        for s in batch["skipped"]:
            self.skipped.setdefault(s.clip_id, s.reason)
        with self.autocast():
            out = self.module(b["audio_a"], b["lengths_a"], b["audio_b"], b["lengths_b"],
                              b["cross_frames"], b["self_frames"], level_weights(b["level"]),
                              one_hot_weights(b["person"], self.net.config.num_persons),
                              b["track_a"], b["track_lengths_a"])
        loss, parts = training_loss(out, b, self.cfg.loss)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.step < self.cfg.train.freeze_encoders_steps:
            for p in self.encoder_params:
                p.grad = None
        clip = self.cfg.optim.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        if torch.isfinite(norm):
            self.scaler.step(self.optimizer)
        else:
            self.nonfinite += 1
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.position = batch["position"] + 1
        self.epoch = batch["epoch"]
        if self.position >= self.batches.batches_per_epoch():
            self.epoch, self.position = self.epoch + 1, 0
        finite_norm = torch.nan_to_num(norm.detach(), nan=0.0, posinf=0.0)
        values = [loss.detach(), *(parts[p].detach() for p in PARTS), finite_norm,
                  b["is_cross"].float().mean(), torch.ones((), device=dev)]
        self.accum += torch.stack([v.double() for v in values])

    def log_train(self) -> dict[str, Any]:
        sums = self.dist.sum_(self.accum.clone())
        n = max(float(sums[-1]), 1.0)
        names = ["loss", *PARTS, "grad_norm", "cross_pairs"]
        record: dict[str, Any] = {"step": self.step, "epoch": self.epoch}
        record.update({k: float(sums[i]) / n for i, k in enumerate(names)})
        record.update({"lr": self.scheduler.get_last_lr()[0],
                       "skipped_clips": len(self.skipped), "nonfinite_steps": self.nonfinite,
                       "elapsed_s": round(time.monotonic() - self.started, 3)})
        self.accum.zero_()
        self._write_record(record)
        return record

    def _write_record(self, record: dict[str, Any]) -> None:
        if not self.dist.main:
            return
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            prefix = "val" if record.get("split") == "val" else "train"
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, int | float):
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])
            self.writer.flush()

    # .. validation ..
    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Loss parts, coefficient-space LVE/EVE of the self-reconstruction (what inference
        computes), the classifier's accuracy and, for models with a phone head, the lip-closure
        AUC on the clips with phones, over this rank's share, pooled over ranks."""
        assert self.val_set is not None
        self.net.eval()
        sums = torch.zeros(len(PARTS) + 7, dtype=torch.float64)
        closure = M.ClosureScores.empty()
        keys = validation_batches(self.val_set, self.cfg.data.batch_size, self.dist.rank,
                                    self.dist.world)
        for batch_keys in keys:
            batch = collate([self.val_set[k] for k in batch_keys])
            sums += self._val_batch(batch, closure)
        self.net.train()
        sums = self.dist.sum_(sums)
        pooled = M.ClosureScores.empty()
        for part in self.dist.gather(closure):
            pooled.extend(part)
        clips = max(float(sums[len(PARTS) + 1]), 1.0)
        record: dict[str, Any] = {"step": self.step, "split": "val"}
        record["loss"] = float(sums[0]) / clips
        record.update({p: float(sums[i + 1]) / clips for i, p in enumerate(PARTS)})
        frames, labelled = float(sums[-2]), float(sums[-1])
        record["lve_coeff"] = float(sums[len(PARTS) + 2]) / max(frames, 1.0)
        record["eve_coeff"] = float(sums[len(PARTS) + 3]) / max(frames, 1.0)
        record["emotion_accuracy"] = (float(sums[len(PARTS) + 4]) / labelled if labelled
                                      else None)
        record["clips"] = int(clips)
        if pooled.vowel:
            record["lip_closure_auc"] = pooled.auc("model")
            record["bilabial_frames"] = pooled.counts()[1]
        score = self._selection_score(record)
        best = self.best_score is None or score < self.best_score
        record["best"] = best
        if best:
            self.best_val, self.best_step, self.best_score = record["loss"], self.step, score
            if self.dist.main:
                save_model(self.out / "model", self.net,
                           metadata=self._metadata(self.step, record["loss"]))
        self._write_record(record)
        self.log(f"step {self.step}: val loss {record['loss']:.5g}, LVE(coeff) "
                 f"{record['lve_coeff']:.4f}" + (" (best)" if best else ""))
        return record

    def _selection_score(self, record: dict[str, Any]) -> float:
        """Lower is better: the validation loss, or minus the lip-closure AUC."""
        if self.cfg.train.select_by == "loss":
            return record["loss"]
        auc = record.get("lip_closure_auc")
        if auc is None or not math.isfinite(auc):
            raise ConfigError("train.select_by = \"lip_closure_auc\" needs validation clips "
                              "with phone files and a model with a phone head")
        return -auc

    def _val_batch(self, batch: dict[str, Any], closure: M.ClosureScores) -> torch.Tensor:
        dev = self.dist.device
        b = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}
        for s in batch["skipped"]:
            self.skipped.setdefault(s.clip_id, s.reason)
        with self.autocast():
            out = self.net.training_forward(
                b["audio_a"], b["lengths_a"], b["audio_b"], b["lengths_b"], b["cross_frames"],
                b["self_frames"], level_weights(b["level"]),
                one_hot_weights(b["person"], self.net.config.num_persons), b["track_a"],
                b["track_lengths_a"])
        loss, parts = training_loss(out, b, self.cfg.loss)
        n = float(b["level"].shape[0])
        mask = _valid_frames(b["self_frames"], out.self_.shape[1])  # (B, T)
        err = (out.self_.float() - b["target_self"]).abs()  # (B, T, 52)
        lve = (err[..., list(LIP_CHANNELS)].amax(-1) * mask).sum()
        eve = (err[..., list(EYE_CHANNELS)].amax(-1) * mask).sum()
        labels = b["emotion"]
        valid = labels != IGNORE_LABEL
        correct = ((out.emotion_logits.argmax(-1) == labels) & valid).sum()
        if b["phones_self"] is not None:
            names = self.net.config.phone_labels
            opening = M.aperture(out.self_.float()).cpu().numpy()  # (B, T)
            for i, frames in enumerate(b["self_frames"].tolist()):
                phones = [names[k] if k >= 0 else None
                          for k in b["phones_self"][i, :frames].tolist()]
                closure.add(phones, {"model": opening[i, :frames]})
        values = [loss * n] + [parts[p] * n for p in PARTS] + [
            torch.tensor(n), lve, eve, correct, mask.sum(), valid.sum()]
        return torch.stack([torch.as_tensor(v).double().cpu() for v in values])

    # .. the end ..
    def _release_ddp(self) -> None:
        """Free DDP's reducer while the process group is alive and idle. Freed later, from a
        destructor that holds the GIL, the group's last reference goes with it and gloo's
        worker threads are joined while one of them waits for the GIL: a deadlock at exit."""
        if self.dist.world > 1:
            self.module = None
            gc.collect()
            torch.distributed.barrier()

    def finish(self, result: RunResult) -> None:
        """Gather skipped clips, write skipped.json, close the process group, and (main process)
        compute the exported model's emotion presets."""
        merged: dict[str, str] = {}
        for part in self.dist.gather(self.skipped):
            merged.update(part)
        result.skipped = [Skipped(k, v) for k, v in sorted(merged.items())]
        if self.writer is not None:
            self.writer.close()
        self._release_ddp()
        self.dist.close()
        if not self.dist.main:
            return
        write_text(self.out / "skipped.json",
                   json.dumps([s.to_dict() for s in result.skipped], indent=2))
        if merged:
            self.log(f"{len(merged)} clip(s) skipped as unusable; see {self.out / 'skipped.json'}")
        model_dir = self.out / "model"
        if result.stopped != "signal" and self.cfg.train.presets and model_dir.is_dir():
            self._presets(model_dir)

    def _presets(self, model_dir: Path) -> None:
        from emotalk_core.presets import compute_presets

        by_emotion: dict[str, list[ManifestEntry]] = {}
        for clip in self.train_clips:
            if clip.entry.emotion and clip.clip_id not in self.skipped:
                by_emotion.setdefault(clip.entry.emotion, []).append(clip.entry)
        entries = [e for group in by_emotion.values()
                   for e in subsample(group, PRESET_CLIPS_PER_EMOTION)]
        if not entries:
            self.log("note: no emotion-labelled training clips; the model has no presets")
            return
        manifest = self.out / "presets_manifest.jsonl"
        write_manifest(manifest, [ManifestEntry(e.clip_id, e.audio, "train", e.blendshapes,
                                                e.emotion, e.intensity, e.person, e.content_id)
                                  for e in entries])
        try:
            names = compute_presets(model_dir, manifest, "train",
                                    device=self.dist.device.type)
        except EmoTalkError as exc:
            self.log(f"warning: emotion presets were not computed: {exc.message}")
            return
        self.log(f"stored {len(names)} emotion presets in {model_dir}: {', '.join(names)}")


def _valid_frames(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    return (torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]).double()


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints (step_N folders; partial saves are hidden .tmp folders), by step."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_")
             and p.name[5:].isdigit() and (p / "trainer.pt").is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after `step` by the interrupted run, so that the resumed log reads
    as if the run had never stopped."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    write_text(path, "".join(line + "\n" for line in keep))


def write_text(path: Path, text: str) -> None:
    """A run's record file, replaced whole: a crash while writing keeps the previous one."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


# -- entry points ---------------------------------------------------------------------------------
def run(cfg: TrainConfig, data_dir: str | os.PathLike, out: str | os.PathLike,
        max_steps: int | None = None, resume: bool = False, device: str = "auto",
        on_step: Callable[[int], None] | None = None) -> RunResult:
    """Train (or continue) a run; returns how it ended. Raises EmoTalkError subclasses for
    problems a user can fix."""
    dist = Dist.setup(device)
    trainer = Trainer(cfg, Path(data_dir), Path(out), dist, max_steps, on_step)
    try:
        trainer.setup(resume)  # Ctrl-C here aborts at once: nothing to save yet
        with StopSignals() as signals:
            result = trainer.train(signals)
        if result.stopped == "signal":
            result.stopped = "signal:" + signal.Signals(signals.received).name
    except BaseException:
        dist.close()
        raise
    trainer.finish(result)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="training config (training/configs/*.toml)")
    p.add_argument("--data", required=True, help="dataset folder holding the manifest")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop at this step (the schedule still spans [train] steps)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run's latest checkpoint (fresh start if none)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (TOML syntax), e.g. --set train.steps=5000")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        result = run(cfg, args.data, args.out, args.max_steps, args.resume, args.device)
    except EmoTalkError as exc:
        return report_error(exc, parser.prog)
    except KeyboardInterrupt:
        print("aborted without saving", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        best = "-" if result.best_val_loss is None else f"{result.best_val_loss:.5g}"
        model = result.run_dir / "model"
        where = f"model: {model}" if model.is_dir() else "no model exported yet (resume the run)"
        print(f"stopped at step {result.step} ({result.stopped}); best val loss {best}; {where}")
    if result.stopped.startswith("signal"):
        return 143 if result.stopped.endswith("SIGTERM") else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
