"""The one training and evaluation loop.

Every method runs through :class:`BaseRunner`. What a method needs before training (the training labels, a
transform fitted to them) is its model's ``before_training`` hook; the task's evaluation (what to encode, the
metrics, the best-epoch number, what to write) is the dataset's evaluator (``common/evaluators.py``). Only a
genuinely different loop is a registered runner subclass named by ``run.runner``, overriding one hook
(``on_train_start``, ``on_epoch_start``, ``after_step``, ``on_epoch_end``); it never copies the loop.

Written for ``torchrun``: one process per device; the sampler shards the data; the training outputs and
the batch are gathered across ranks (with gradients) before the loss, so pairwise losses see the global
batch; evaluation encodes shards and gathers the codes in dataset order; rank 0 alone writes.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from common.config import Config, ConfigError, Section, build, from_section, nested_sections, resolve, yaml_value
from common.evaluators import build_evaluator, evaluator_class
from common.register import registry
from common.schema import NonNegativeInt, PositiveFloat, PositiveInt, validate
from dataset.splits import save_split
from dataset.tokenizers import text_inputs
from models.base import MODEL_SECTION, HashModel, TrainingContext, build_model
from runners.feature_cache import cached_features
from utils import distributed
from utils.checkpoint import load, rng_state, save_atomic, seed_everything, set_rng_state
from utils.io import atomic_write_text
from utils.logging import log_to_file, setup_logging
from utils.run_dir import Mode, RunDirectory

AMP_DTYPES = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class RunConfig:
    """The ``run`` section.

    Attributes:
        runner: registered runner class.
        epochs: training epochs.
        batch_size: items per process per step (the global batch is batch_size x processes).
        drop_last: drop the last, incomplete training batch of each epoch (for losses or BatchNorm layers that
            need full batches).
        eval_batch_size: items per step when encoding; None = batch_size.
        num_workers: DataLoader workers per process.
        eval_every: evaluate every N epochs (and always after the last one).
        seed: seeds python/numpy/torch, the shuffling and the caption draws.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: ``none``, ``fp16`` or ``bf16`` autocast (CUDA only; ignored on CPU).
        clip_grad_norm: global gradient-norm clipping (None = off; BertAdam clips per tensor itself).
        accumulate_steps: micro-batches per optimiser step. The loss is computed once over all of them
            (embeddings first without gradients, then each micro-batch again with gradients), so k
            micro-batches of B train exactly like one batch of kB even for pairwise losses.
        compile: wrap the model's forward in ``torch.compile``.
        feature_cache: with ``model.freeze_backbone: true``, encode every image and caption once and train
            only the heads from the cached features (runners/feature_cache.py).
        feature_cache_dir: where cached features are kept (one file per split, keyed by their inputs).
        gather_across_ranks: let losses see the global batch under torchrun (the method as published).
        find_unused_parameters: passed to DDP, for models with parameters a step may not use.
        log_every: steps between loss lines in the log and TensorBoard.
        progress: show tqdm progress bars.
        save_codes: export codes and labels (.mat) and curves after evaluations.
    """

    runner: str = "BaseRunner"
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 64
    drop_last: bool = False
    eval_batch_size: PositiveInt | None = None
    num_workers: NonNegativeInt = 2
    eval_every: PositiveInt = 1
    seed: int = 1814
    device: str = "auto"
    amp: Literal["none", "fp16", "bf16"] = "none"
    clip_grad_norm: PositiveFloat | None = None
    accumulate_steps: PositiveInt = 1
    compile: bool = False
    feature_cache: bool = False
    feature_cache_dir: str = "cache/features"
    gather_across_ranks: bool = True
    find_unused_parameters: bool = False
    log_every: PositiveInt = 20
    progress: bool = True
    save_codes: bool = True

    def __post_init__(self):
        validate(self)


def config_sections() -> dict[str, Section]:
    """The schema of a run's config: each section and the class its keys belong to."""
    return {
        "model": MODEL_SECTION,
        "optimizer": Section(kind="optimizer", context=("param_groups", "total_steps", "steps_per_epoch")),
        "dataset": Section(kind="dataset", context=("preprocess", "seed")),
        "run": Section(target=lambda resolved: RunConfig),
        "eval": Section(target=lambda resolved: evaluator_class(resolved["dataset"]["name"]).Options
                        if "dataset" in resolved else None),
    }


def runner_class(cfg: Config) -> type:
    """The runner a config names in ``run.runner`` (:class:`BaseRunner` unless a method's loop differs)."""
    run = cfg.get("run") if isinstance(cfg.get("run"), dict) else {}
    return registry.get("runner", run.get("runner", RunConfig.runner))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class BaseRunner:
    """Builds everything from a config through the registry, then trains, evaluates and checkpoints."""

    def __init__(self, cfg: Config, save_dir: str | Path | None, device: str | None = None, mode: Mode = "new"):
        """Resolve the config and build everything. ``save_dir`` is claimed (see :mod:`utils.run_dir` for
        ``mode``) only at the first write, in :meth:`fit` or an evaluation: nothing is written before the whole
        config has validated, every input was found and a resumed checkpoint was checked."""
        self.cfg = cfg = resolve(cfg, config_sections())
        self.run_cfg = from_section(RunConfig, cfg["run"])
        self.dist = distributed.setup(device or self.run_cfg.device)
        self.device = self.dist.device
        self.save_dir = Path(save_dir) if save_dir is not None and self.dist.is_main else None
        self.logger = setup_logging(self.dist.is_main, keep=self.save_dir is not None)
        seed_everything(self.run_cfg.seed)

        backbones = {key: build(kind, section)
                     for key, (kind, section) in nested_sections("model", cfg["model"]).items()}
        self.preprocess = HashModel.preprocess_of(backbones)
        with distributed.main_process_first():
            self.data = build("dataset", cfg["dataset"], preprocess=self.preprocess, seed=self.run_cfg.seed)
        self.model: HashModel = build_model(cfg["model"], backbones, self.data.num_classes,
                                            len(self.data.train)).to(self.device)
        self.feature_cache = self.run_cfg.feature_cache
        if self.feature_cache:
            self._use_feature_cache()
        self.evaluator = build_evaluator(cfg["dataset"]["name"], self.data, cfg["eval"])
        self.train_loader = self._loader(self.data.train, train=True)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / self.run_cfg.accumulate_steps)
        self.optimizer, self.scheduler = build(
            "optimizer", cfg["optimizer"], param_groups=self.model.param_groups(),
            total_steps=self.steps_per_epoch * self.run_cfg.epochs, steps_per_epoch=self.steps_per_epoch)
        self.extra_optimizers = self.model.extra_optimizers()
        self.ddp_model = self.model
        if self.dist.distributed:
            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.run_cfg.find_unused_parameters)
        if self.run_cfg.compile:
            self.ddp_model = torch.compile(self.ddp_model)
        self.amp_dtype = AMP_DTYPES[self.run_cfg.amp] if self.device.type == "cuda" else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.epoch, self.global_step = 0, 0
        self.history: list[dict] = []
        self.best: dict[str, dict] = {}
        self.mode, self.run_dir, self.writer = mode, None, None

    def open_run_directory(self) -> None:
        """Claim the run directory under its lock, then write the log, the config, the split, TensorBoard
        (once; a no-op without a run directory)."""
        if self.save_dir is None or self.run_dir is not None:
            return
        self.run_dir = RunDirectory(self.save_dir, self.mode)
        self.run_dir.claim()
        log_to_file(self.save_dir / "train.log")
        if self.run_dir.moved_to is not None:
            self.logger.info(f"moved the earlier run of {self.save_dir} aside to {self.run_dir.moved_to}")
        self.cfg.dump(self.save_dir / "config.yaml")
        save_split(self.save_dir / "split.npz", self.data.split)
        self.writer = self._tensorboard()

    # ------------------------------------------------------------------ building blocks
    def _loader(self, dataset, train: bool) -> DataLoader:
        """Shuffled, rank-sharded loader for training; rank-sharded, ordered loader for encoding."""
        sampler = DistributedSampler(dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                     shuffle=train, seed=self.run_cfg.seed)
        batch = self.run_cfg.batch_size if train else (self.run_cfg.eval_batch_size or self.run_cfg.batch_size)
        return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=self.run_cfg.num_workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=False,
                          drop_last=train and self.run_cfg.drop_last)

    def _use_feature_cache(self) -> None:
        """Replace every split by its cached backbone features (the frozen-backbone fast path)."""
        name = self.cfg["model"]["name"]
        if not getattr(self.model, "backbone_frozen", False):
            raise ConfigError("run.feature_cache needs model.freeze_backbone: true (features of a backbone "
                              "that trains would go stale)")
        if not self.model.supports_feature_cache:
            raise ConfigError(f"run.feature_cache: model {name} does not split into image_features/text_features "
                              f"and hash_image/hash_text, so its heads cannot train from cached features")
        if self.data.caption_eval is not None:
            raise ConfigError("run.feature_cache works with labelled datasets; set it to false for caption pairs")
        batch = self.run_cfg.eval_batch_size or self.run_cfg.batch_size
        with distributed.main_process_first():
            for split in ("train", "query", "retrieval"):
                setattr(self.data, split, cached_features(self.model, getattr(self.data, split),
                                                          self.run_cfg.feature_cache_dir, self.device, batch,
                                                          self.run_cfg.num_workers))

    def _tensorboard(self):
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(str(self.save_dir / "tb"))

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ hooks
    def training_context(self) -> TrainingContext:
        """What the model's ``before_training`` hook receives (a run directory only once it is claimed)."""
        run_dir = self.save_dir if self.run_dir is not None else None
        return TrainingContext(self.data, self.device, run_dir, self.logger)

    def on_train_start(self) -> None:
        """Called once before the first epoch (after a resume too), after the model's ``before_training``."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch."""

    def after_step(self, batch: dict, outputs: dict, losses: dict) -> None:
        """Called after each optimiser step with the global batch and outputs."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch, before evaluation and checkpointing."""

    # ------------------------------------------------------------------ training
    def gather_batch(self, outputs: dict, batch: dict) -> tuple[dict, dict]:
        """Outputs and batch of every rank, so a loss that compares items sees the global batch."""
        if not (self.dist.distributed and self.run_cfg.gather_across_ranks):
            return outputs, batch
        gathered = {k: distributed.gather(v) if torch.is_tensor(v) else v for k, v in outputs.items()}
        batch = {k: distributed.gather(v) for k, v in batch.items() if k in ("label", "index")}
        return gathered, batch

    def train_step(self, micro_batches: list[dict]) -> dict[str, float]:
        """One optimiser step over ``run.accumulate_steps`` micro-batches; returns the loss terms as floats."""
        micro = [to_device(b, self.device) for b in micro_batches]
        self.optimizer.zero_grad(set_to_none=True)
        for opt in self.extra_optimizers.values():
            opt.zero_grad(set_to_none=True)
        if len(micro) == 1:
            with self.autocast():
                outputs = self.ddp_model(micro[0])
            outputs, batch, losses = self._loss(outputs, micro[0])
            self.scaler.scale(losses["total"]).backward()
        else:
            outputs, batch, losses = self._accumulated_backward(micro)
        if self.run_cfg.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.run_cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        for opt in self.extra_optimizers.values():
            self.scaler.step(opt)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        self.after_step(batch, outputs, losses)
        return {k: float(v.detach()) for k, v in losses.items()}

    def _loss(self, outputs: dict, batch: dict) -> tuple[dict, dict, dict]:
        """The method's loss on the global batch; a non-finite total stops training with advice."""
        outputs, batch = self.gather_batch(outputs, batch)
        losses = self.model.loss(outputs, batch)
        if not torch.isfinite(losses["total"]):
            raise FloatingPointError(f"loss became {float(losses['total'])} at epoch {self.epoch + 1}, step "
                                     f"{self.global_step}: lower optimizer.lr or check the data")
        return outputs, batch, losses

    def _accumulated_backward(self, micro: list[dict]) -> tuple[dict, dict, dict]:
        """Exact gradient accumulation for losses over the whole batch (the gradient-cache technique).

        Forward every micro-batch without gradients, compute the loss once on the concatenated outputs,
        then forward each micro-batch again (same RNG state) and back-propagate its slice of the output
        gradients. DDP synchronises only on the last micro-batch.
        """
        rng, detached = [], []
        with torch.no_grad():
            for batch in micro:
                rng.append(self._rng_snapshot())
                with self.autocast():
                    detached.append(self.model(batch))
        keys = [k for k, v in detached[0].items() if torch.is_tensor(v)]
        outputs = {k: torch.cat([d[k] for d in detached]).requires_grad_() for k in keys}
        batch = {k: torch.cat([b[k] for b in micro]) for k in micro[0] if k in ("label", "index")}
        gathered, global_batch, losses = self._loss(outputs, batch)
        self.scaler.scale(losses["total"]).backward()
        start = 0
        for i, part in enumerate(micro):
            self._rng_restore(rng[i])
            sync = self.ddp_model.no_sync() if self.dist.distributed and i < len(micro) - 1 else nullcontext()
            with sync, self.autocast():
                out = self.ddp_model(part)
            size = len(part["index"])
            surrogate = sum((out[k] * outputs[k].grad[start:start + size]).sum() for k in keys)
            surrogate.backward()
            start += size
        return gathered, global_batch, losses

    def _rng_snapshot(self) -> tuple:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def _rng_restore(self, state: tuple) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    def micro_batch_groups(self):
        """The training loader's batches in groups of ``run.accumulate_steps`` (the last may be shorter)."""
        group = []
        for batch in self.train_loader:
            group.append(batch)
            if len(group) == self.run_cfg.accumulate_steps:
                yield group
                group = []
        if group:
            yield group

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.train_loader.sampler.set_epoch(epoch)
        self.data.train.set_epoch(epoch)
        sums: dict[str, float] = {}
        bar = tqdm(self.micro_batch_groups(), total=self.steps_per_epoch, leave=False,
                   desc=f"epoch {epoch + 1}/{self.run_cfg.epochs}",
                   disable=not (self.run_cfg.progress and self.dist.is_main), dynamic_ncols=True)
        for group in bar:
            losses = self.train_step(group)
            self.global_step += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{losses['total']:.4f}")
            if self.global_step % self.run_cfg.log_every == 0:
                self._log_scalars("train", losses)
                self._log_scalars("lr", self.current_lrs())
        means = {k: v / self.steps_per_epoch for k, v in sums.items()}
        self.logger.info(f"epoch {epoch + 1}/{self.run_cfg.epochs} " + " ".join(
            f"{k}={v:.4f}" for k, v in means.items()))
        return means

    def current_lrs(self) -> dict[str, float]:
        if hasattr(self.optimizer, "current_lrs"):
            return self.optimizer.current_lrs()
        return {g.get("group", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}

    def fit(self) -> dict:
        """Train from ``self.epoch`` to ``run.epochs``, evaluating and checkpointing; returns the summary."""
        self.open_run_directory()
        self.model.before_training(self.training_context())
        self.on_train_start()
        self.logger.info(f"training {self.cfg['model']['name']} for {self.run_cfg.epochs} epochs, "
                         f"{self.steps_per_epoch} steps each, on {self.device} x {self.dist.world_size}")
        for epoch in range(self.epoch, self.run_cfg.epochs):
            start = time.time()
            self.on_epoch_start(epoch)
            self.train_epoch(epoch)
            self.on_epoch_end(epoch)
            self.epoch = epoch + 1
            last = self.epoch == self.run_cfg.epochs
            codes, improved = None, False
            if self.epoch % self.run_cfg.eval_every == 0 or last:
                codes, improved = self.evaluate_epoch()
            self.save_checkpoint(improved)
            if codes is not None:
                self.write_evaluation(codes, improved)
            self.logger.info(f"epoch {self.epoch} took {time.time() - start:.1f}s")
        return self.summary()

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def encode(self, dataset, modalities=("image", "text")) -> dict[str, torch.Tensor]:
        """Binary codes of a whole split per modality, in dataset order, on every rank."""
        self.model.eval()
        if self.feature_cache:
            encoders = {"image": lambda b: self.model.hash_image(b["image_features"]),
                        "text": lambda b: self.model.hash_text(b["text_features"])}
        else:
            encoders = {"image": lambda b: self.model.encode_image(b["image"]),
                        "text": lambda b: self.model.encode_text(**text_inputs(b))}
        parts: dict[str, list] = {m: [] for m in (*modalities, "index")}
        for batch in self._loader(dataset, train=False):
            batch = to_device(batch, self.device)
            with self.autocast():
                for m in modalities:
                    parts[m].append(self.model.binarize(encoders[m](batch).float()))
            parts["index"].append(batch["index"])
        gathered = {m: distributed.gather(torch.cat(v)) for m, v in parts.items()}
        index = gathered.pop("index")
        order = torch.empty(len(dataset), dtype=torch.long, device=index.device)
        order[index] = torch.arange(len(index), device=index.device)  # DistributedSampler pads by repeating
        return {m: codes[order].cpu() for m, codes in gathered.items()}

    def evaluate(self) -> dict:
        """Encode the evaluation sets once and compute every metric of the task."""
        return self.evaluator.score(self.evaluator.compute_codes(self.encode))

    def random_code_baseline(self) -> dict[str, float]:
        """The primary metric of random codes on this split: the level a trained model must clearly beat."""
        return self.evaluator.random_baseline(self.model.bits)

    def evaluate_and_record(self) -> bool:
        """Evaluate, log, and write codes / curves / metrics.json; True if the mean primary metric improved."""
        self.open_run_directory()
        codes, improved = self.evaluate_epoch()
        if codes is not None:
            self.write_evaluation(codes, improved)
        return improved

    def evaluate_epoch(self) -> tuple[dict | None, bool]:
        """Encode and score the evaluation sets, log, and record the history and the best epoch (nothing is
        written). Returns the codes (None on processes that do not write) and whether the mean improved."""
        codes = self.evaluator.compute_codes(self.encode)
        if not self.dist.is_main:
            return None, False
        results = self.evaluator.score(codes)
        self.history.append({"epoch": self.epoch, "step": self.global_step, **results})
        for direction, values in results.items():
            self._log_scalars(f"eval/{direction}", values)
        key, ranked = self.evaluator.primary, self.evaluator.ranked
        score = float(np.mean([results[d][key] for d in ranked]))
        improved = score > self.best.get("mean", {}).get(key, -1.0)
        for direction in ranked:
            if results[direction][key] > self.best.get(direction, {}).get(key, -1.0):
                self.best[direction] = {"epoch": self.epoch, key: results[direction][key]}
        if improved:
            self.best["mean"] = {"epoch": self.epoch, key: score}
        self.logger.info(f"evaluation after epoch {self.epoch}:\n{self.evaluator.format(results)}")
        self.logger.info(f"{key}  " + "  ".join(f"{d}={results[d][key]:.4f}" for d in ranked)
                         + "  (best " + "  ".join(f"{d}={self.best[d][key]:.4f}@{self.best[d]['epoch']}"
                                                  for d in ranked) + ")")
        return codes, improved

    def write_evaluation(self, codes: dict, improved: bool) -> None:
        """The evaluator's codes and curves, then ``metrics.json``: written after the checkpoints of the same
        epoch, so metrics.json never names an epoch whose checkpoint is missing."""
        if self.save_dir is None:
            return
        if self.run_cfg.save_codes:
            self.evaluator.save(codes, self.save_dir, ["last", "best"] if improved else ["last"])
        self.write_metrics()

    def summary(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {"last": last, "best": self.best, "history": self.history}

    def write_metrics(self) -> None:
        atomic_write_text(self.save_dir / "metrics.json", json.dumps(self.summary(), indent=2))

    def _log_scalars(self, prefix: str, values: dict) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, self.global_step)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "extra_optimizers": {k: o.state_dict() for k, o in self.extra_optimizers.items()},
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "global_step": self.global_step,
                "best": self.best, "history": self.history, "rng": rng_state(),
                "config": json.loads(json.dumps(dict(self.cfg))), "model_context": self.model_context()}

    def model_context(self) -> dict:
        """The data sizes the model was built with, so that ``models.trained.load_trained`` rebuilds it from the
        checkpoint alone."""
        return {"num_classes": self.data.num_classes, "num_train": len(self.data.train)}

    def save_checkpoint(self, best: bool) -> None:
        """``best.pt`` when the mean primary metric improved, then ``last.pt``, each atomic.

        In this order a crash at any instant leaves files a resume repairs: killed before ``last.pt``, the
        resumed run repeats the epoch (bitwise identically) and rewrites both; killed after it, the resume
        rewrites the codes and metrics.json of that epoch (:meth:`_repair_evaluation_files`).
        """
        if self.save_dir is None:
            return
        state = self.state_dict()
        if best:
            save_atomic(state, self.save_dir / "checkpoints" / "best.pt")
        save_atomic(state, self.save_dir / "checkpoints" / "last.pt")

    def load_checkpoint(self, path: str | Path, resume: bool, accept_config_changes: bool = False) -> None:
        """Load model weights; with ``resume`` also optimiser, scheduler, RNG, epoch and history.

        On resume the checkpoint's config must equal the one being run, unless ``accept_config_changes``: then
        the new values take effect (the optimisers' hyperparameters and the schedule's length are always
        those of the config being run) and every change is logged.
        """
        state = load(path, map_location=self.device)
        self._check_checkpoint_fits(state, path)
        self.model.load_state_dict(state["model"])
        if not resume:
            return
        if "optimizer" not in state:
            raise ValueError(f"checkpoint '{path}' holds model weights only (no optimiser state): evaluate it with "
                             f"--eval-only --checkpoint {path}, or resume from a checkpoints/last.pt")
        changes = config_changes(state.get("config", {}), self.cfg)
        if changes and not accept_config_changes:
            raise ValueError(f"checkpoint '{path}' was written with another config: {'; '.join(changes)}; "
                             f"resume with the config it was written with, or pass --accept-config-changes to "
                             f"continue with the new values")
        for change in changes:
            self.logger.info(f"resuming with a changed config: {change}")
        fresh = optimizer_hyperparameters(self.optimizer)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        apply_hyperparameters(self.optimizer, fresh, self.scheduler)
        for name, opt in self.extra_optimizers.items():
            fresh = optimizer_hyperparameters(opt)
            opt.load_state_dict(state["extra_optimizers"][name])
            apply_hyperparameters(opt, fresh)
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.best, self.history = state["best"], state["history"]
        set_rng_state(state["rng"])
        self.logger.info(f"resumed from '{path}' at epoch {self.epoch}")
        self._repair_evaluation_files()

    def _check_checkpoint_fits(self, state: dict, path) -> None:
        """A checkpoint of another method, or of another code length whose weights do not fit, is named as such,
        not as a state_dict diff (one checkpoint may serve several lengths: TwDH derives them)."""
        model = state.get("config", {}).get("model", {})
        ours = self.cfg["model"]
        expected = self.model.state_dict()
        missing = [k for k in expected if k not in state["model"]]
        unexpected = [k for k in state["model"] if k not in expected]
        wrong = [k for k in expected if k in state["model"] and state["model"][k].shape != expected[k].shape]
        other_method = model and model.get("name") != ours["name"]
        if other_method or (model and (missing or unexpected or wrong) and model.get("bits") != ours["bits"]):
            raise ValueError(f"checkpoint '{path}' was written for {model.get('name')} with bits={model.get('bits')}; "
                             f"the config builds {ours['name']} with bits={ours['bits']}")
        if missing or unexpected or wrong:
            parts = [f"{len(names)} {what} (first: {names[0]})" for what, names in
                     (("missing tensors", missing), ("unexpected tensors", unexpected),
                      ("tensors of another shape", wrong)) if names]
            raise ValueError(f"checkpoint '{path}' does not fit the model {ours['name']} of this config: "
                             f"{', '.join(parts)}")

    def _repair_evaluation_files(self) -> None:
        """After a crash between a checkpoint and the files of its evaluation, write those files again.

        Rank 0 decides (it alone reads the run directory); every rank then encodes, as evaluation gathers.
        """
        if not self.history or self.history[-1]["epoch"] != self.epoch:
            return
        written = read_json_or_none(self.save_dir / "metrics.json") if self.save_dir is not None else None
        unfinished = self.save_dir is not None and (written or {}).get("last", {}).get("epoch") != self.epoch
        if not distributed.broadcast(torch.tensor([float(unfinished)], device=self.device)).item():
            return
        self.open_run_directory()
        self.logger.info(f"rewriting the codes and metrics.json of epoch {self.epoch}, which the interrupted run "
                         f"did not finish")
        restored = rng_state()  # encoding draws loader seeds; the resumed run must go on from the saved RNG
        codes = self.evaluator.compute_codes(self.encode)
        set_rng_state(restored)
        if self.save_dir is not None:
            self.write_evaluation(codes, self.best.get("mean", {}).get("epoch") == self.epoch)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.run_dir is not None:
            self.run_dir.release()


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Every key whose value differs between two resolved configs, as 'key: old -> new' (keys the older
    config does not have are skipped: checkpoints of earlier versions stored only the keys their YAML set)."""
    changes = []
    for key, value in new.items():
        if key not in old:
            continue
        if isinstance(value, dict) and isinstance(old[key], dict):
            changes += config_changes(old[key], value, f"{prefix}{key}.")
        elif old[key] != value:
            changes.append(f"{prefix}{key}: {yaml_value(old[key])} -> {yaml_value(value)}")
    return changes


def optimizer_hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict]:
    """Each parameter group's settings (everything but its parameters), as the config being run built them."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def apply_hyperparameters(optimizer: torch.optim.Optimizer, groups: list[dict], scheduler=None) -> None:
    """Give a restored optimiser the settings of the config being run (a no-op when the config is unchanged).

    With a per-step scheduler the group's ``lr`` is the scheduled value: it is recomputed from the new base
    rates at the restored step, over the new schedule length.
    """
    for group, settings in zip(optimizer.param_groups, groups):
        group.update({k: v for k, v in settings.items() if scheduler is None or k != "lr"})
    if scheduler is not None:
        scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)


def read_json_or_none(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


registry.set_base("runner", BaseRunner)
registry.register_runner("BaseRunner")(BaseRunner)
