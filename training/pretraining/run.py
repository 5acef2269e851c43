"""One pretraining run: the model and its optimiser, the loss of a batch, validation, the loop, and the saved results.

`pretrain(config)` is what `training/pretrain.py` (the `accelerate launch` entry point) and `moleclip pretrain` call.
The objective is the paper's: a symmetric contrastive loss between a plain and a randomly styled, augmented drawing of
each molecule, with the negatives taken from the global batch across processes, plus one cross-entropy per K-means
pseudo-label set of MACCS keys. Batches are groups of molecules of the same fine class. The optimiser is the paper's
`torch.optim.Adam` with L2 weight decay (`--optimizer adamw` for decoupled decay), without gradient clipping.

A run is a sequence of stages, each handing the next a record: `_open_run` (accelerator, run folder, saved config),
`_read_molecules` (`Molecules`), `_build_encoder` (`Encoder`), `_build_batches` (`Batches`), `_plan_steps`
(`StepPlan`), `_train` (`Trained`), then `_summary` and `_save` (training_results.json, the model folder, the Hub).
Module level: standard library only; torch, accelerate and the model are imported when a run starts.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import torch

from accelerate import Accelerator, InitProcessGroupKwargs

from accelerate.utils import set_seed

from torch.utils.data import DataLoader

from moleclip.configuration_moleclip import MODEL_PRESETS
from moleclip.processing.augment_batched import augment_batch
from moleclip.processing.cores import available_cores
from moleclip.processing.image_processing_moleclip import MoleCLIPImageProcessor
from moleclip.processing.pretraining_data import (
    FixedBatches,
    PrerenderedImages,
    TwoViewDataset,
    VALID_STREAM,
    collate_two_views,
)
from moleclip.training.loop import (
    LoopSettings,
    OPTIMIZER_TEXT,
    STATE_FILE,
    TrainingLoop,
    build_optimizer,
    build_scheduler,
    latest_checkpoint,
    unwrap,
)
from moleclip.training.outputs import check_run_folder, hold_run_folder, json_text, write_text_atomically
from moleclip.training.pretraining.config import (
    CONFIG_FILE,
    KILL_ENV,
    MODEL_DIR,
    RESULTS_FILE,
    RUN_OUTPUTS,
    TASKS,
    PretrainConfig,
)
from moleclip.training.pretraining.table import PretrainingTable, load_pretraining_table, split_positions
from moleclip.training.samplers import EpochBatches, GroupedClassBatchSampler, ShuffledBatchSampler
from moleclip.training.serving.hub import (
    check_model_exists,
    check_push_possible,
    describe_backbone,
    load_backbone,
    load_processor,
    push_model_dir,
    read_model_config,
    save_model_dir,
)

__all__ = ["pretrain", "build_param_groups", "build_pretrain_optimizer", "PretrainStep", "make_evaluator"]


# ---------------------------------------------------------------------------------------------------- model
def _start_label_heads_afresh(model, config: PretrainConfig, accelerator) -> None:
    """A new run's pseudo-label classifiers start from scratch, also when the backbone is a MoleCLIP checkpoint that
    carries some: its K-means numbered its clusters its own way, so class 17 of its classifier has nothing to do with
    class 17 of this run's labels (a run extended with --resume keeps its classifiers from its checkpoint)."""
    spec = str(config.backbone)
    if config.resume is not None or spec in MODEL_PRESETS or spec.endswith((".pth", ".pt")):
        return  # resumed: the checkpoint's classifiers are loaded next; presets and .pth files have none
    saved = read_model_config(spec)
    if saved.get("model_type") != "moleclip" or not saved.get("pseudo_label_classes"):
        return
    for head in model.label_heads:
        head.reset_parameters()
    accelerator.print(f"the pseudo-label classifiers of {spec} are not reused (their clusters are another K-means' "
                      "numbering): this run's start afresh; to extend a run with its classifiers, use --resume")


def build_param_groups(model, config: PretrainConfig) -> list[dict]:
    """Encoder (tower + projection): `encoder_lr`, `encoder_weight_decay`; pseudo-label classifiers ("heads"):
    `classifier_lr`, `classifier_weight_decay`.

    A learnable logit scale trains at the encoder rate without decay (decay would pull the temperature towards 1).
    """
    encoder = list(model.vision_model.parameters()) + list(model.visual_projection.parameters())
    heads = list(model.label_heads.parameters())
    covered = {id(p) for p in encoder + heads} | {id(model.logit_scale)}
    stray = [n for n, p in model.named_parameters() if id(p) not in covered]
    if stray:
        raise ValueError(f"parameters outside the encoder and heads would not be trained: {stray}")
    return [
        {"params": encoder, "lr": config.encoder_lr, "weight_decay": config.encoder_weight_decay, "name": "encoder"},
        {"params": heads, "lr": config.classifier_lr, "weight_decay": config.classifier_weight_decay, "name": "heads"},
        {"params": [model.logit_scale], "lr": config.encoder_lr, "weight_decay": 0.0, "name": "logit_scale"},
    ]


def build_pretrain_optimizer(model, config: PretrainConfig):
    """`config.optimizer` ("adam": the paper's L2 decay; "adamw") over the groups of `build_param_groups`."""
    return build_optimizer(build_param_groups(model, config), kind=config.optimizer)


class PretrainStep:
    """The loss of one batch for the training loop: augment (when the workers left it to the device) and normalise
    on the device, run both views, name the loss parts."""

    def __init__(self, ks: list[int], dump_dir: str | None = None, rank: int = 0, dump_embeddings: int = 2,
                 processor=None, augmentation: str = "none"):
        self.ks = list(ks)
        self.augmentation = augmentation  # applied here only to batches that carry `augment_seeds`
        if processor is None:
            processor = MoleCLIPImageProcessor()
        # its normalisation and channel order (BGR for the paper's converted weights), as inference applies them
        self.processor = processor
        self.dump_file = None
        if dump_dir:
            Path(dump_dir).mkdir(parents=True, exist_ok=True)
            self.dump_file = Path(dump_dir) / f"rank{rank}.jsonl"
        self.dump_embeddings = dump_embeddings
        self.calls = 0
        kill = os.environ.get(KILL_ENV)
        self.kill_at = int(kill) if kill else None

    def forward(self, model, batch):
        """The model's output on `batch`: the contrastive loss when it carries the styled view, the classification
        losses when it carries pseudo-labels (the run's tasks decide what its batches hold)."""
        plain, styled = batch["pixel_values"], batch.get("augmented_pixel_values")
        if "augment_seeds" in batch:
            # both views in one batched pass; each picture's choices come from its own seed (see TwoViewDataset)
            seeds = batch["augment_seeds"].cpu()
            views = [plain] if styled is None else [plain, styled]
            both = augment_batch(torch.cat(views), self.augmentation,
                                 [s for view in range(len(views)) for s in seeds[:, view].tolist()], channels_last=False)
            plain, styled = both[: len(plain)], (None if styled is None else both[len(plain):])
        return model(
            pixel_values=self.processor.normalize_pixels(plain, input_data_format="channels_first"),
            augmented_pixel_values=(None if styled is None else
                                    self.processor.normalize_pixels(styled, input_data_format="channels_first")),
            pseudo_labels=batch.get("pseudo_labels"),
        )

    def __call__(self, model, batch, progress):
        """The loss of `batch` and its parts; `progress` is the loop's state (its step counter feeds the kill hook
        and the dump)."""
        step = progress.global_step
        if self.kill_at is not None and step >= self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard crash: no cleanup, no final save
        output = self.forward(model, batch)
        # Tensors, not floats: the loop sums them on the device and reads them at log steps only.
        parts = {}
        if output.contrastive_loss is not None:
            parts["contrastive_loss"] = output.contrastive_loss.detach()
        if output.classification_losses is not None:
            for k, value in zip(self.ks, output.classification_losses.detach()):
                parts[f"classification_loss_k{k}"] = value
        if self.dump_file is not None:
            contrastive = output.logits_per_view is not None
            record = {"call": self.calls, "step": step, "epoch": progress.epoch, "indices": batch["indices"].tolist(),
                      "logits_shape": list(output.logits_per_view.shape) if contrastive else None,
                      "contrastive_loss": float(parts["contrastive_loss"]) if contrastive else None,
                      "logit_scale": float(unwrap(model).logit_scale.exp())}
            if self.calls < self.dump_embeddings:
                record["image_embeds"] = output.image_embeds.detach().float().tolist()
                if contrastive:
                    record["augmented_image_embeds"] = output.augmented_image_embeds.detach().float().tolist()
            with open(self.dump_file, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        self.calls += 1
        return output.loss, parts


def make_evaluator(accelerator, step: PretrainStep, loader, ks: list[int], contrastive: bool = True):
    """Validation: mean loss parts (those of the run's tasks: `contrastive`, and a classification per K of `ks`) and
    pseudo-label accuracies over the held-out batches, across processes.

    An accuracy counts the molecules with a class only: one that could not be drawn comes with label -100, which the
    cross-entropy ignores, and is not a wrong answer of the classifier.
    """
    def evaluate(model) -> dict[str, float]:
        model.eval()
        names = ["loss"] + ["contrastive_loss"] * contrastive + [f"classification_loss_k{k}" for k in ks]
        totals = torch.zeros(len(names), dtype=torch.float64, device=accelerator.device)
        hits = torch.zeros(len(ks), dtype=torch.float64, device=accelerator.device)
        counted = torch.zeros(len(ks), dtype=torch.float64, device=accelerator.device)
        batches = 0
        with torch.no_grad():
            for batch in loader:
                batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
                out = step.forward(model, batch)
                values = [out.loss] + [out.contrastive_loss] * contrastive
                values += list(out.classification_losses) if ks else []
                totals += torch.stack([v.detach().double() for v in values])
                for j, logits in enumerate(out.label_logits or []):
                    labels = batch["pseudo_labels"][:, j]
                    known = labels != -100
                    hits[j] += ((logits.argmax(-1) == labels) & known).sum()
                    counted[j] += known.sum()
                batches += 1
        totals = accelerator.reduce(totals / max(batches, 1), reduction="mean")
        hits, counted = accelerator.reduce(hits, reduction="sum"), accelerator.reduce(counted, reduction="sum")
        accuracies = (hits / counted.clamp(min=1)).tolist()
        return {**{f"valid_{name}": float(v) for name, v in zip(names, totals.tolist())},
                **{f"valid_accuracy_k{k}": float(a) for k, a in zip(ks, accuracies)}}

    return evaluate


# ---------------------------------------------------------------------------------------------------- the run
def _default_workers(num_processes: int) -> int:
    return max(0, available_cores() // max(1, num_processes) - 1)


def _resolve_augment_on(config: PretrainConfig, saved_file: Path, device_type: str) -> str:
    """Where augmentation runs: as asked, or ("auto") on the device with a GPU and in the workers without; a resumed
    "auto" run keeps the place it started with, since the two paths draw different (equally distributed) pictures."""
    if config.augment_on != "auto":
        return config.augment_on
    if config.resume and saved_file.is_file():
        saved = PretrainConfig.saved_settings(saved_file.read_text()).get("augment_on")
        if saved in ("workers", "device"):
            return saved
    return "device" if device_type == "cuda" else "workers"


def _check_resumed_config(config: PretrainConfig, saved_file: Path, accelerator) -> None:
    """Warn when a resumed run changes settings that decide the data order or the optimisation."""
    if not saved_file.is_file():
        return
    saved = PretrainConfig.saved_settings(saved_file.read_text())
    # A file written before `optimizer` was a setting comes from a run that used AdamW; before `tasks`, both tasks.
    saved.setdefault("optimizer", "adamw")
    saved.setdefault("tasks", list(TASKS))
    harmless = {"resume", "overwrite", "push_to_hub", "hub_private", "progress", "num_workers", "max_steps", "epochs", "save_every",
                "save_total_limit", "eval_every", "log_every", "debug_dump_dir", "pseudo_label_jobs", "coordinate_cache_size",
                "prerendered"}
    if config.schedule == "cosine":  # the cosine runs over the whole run: a longer run decays more slowly
        harmless -= {"max_steps", "epochs"}
    changed = {k: (saved.get(k), v) for k, v in dataclasses.asdict(config).items() if k not in harmless and saved.get(k) != v}
    if changed:
        accelerator.print("warning: resuming with changed settings (the run will not repeat the original exactly): " +
                          ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))


def _refuse_other_tasks(config: PretrainConfig) -> None:
    """A resumed run trains the tasks it started with: its checkpoint holds the classifiers (or none) and optimiser
    state of those tasks, and its pseudo-labels were computed (or not) for them. Every process reads the file, so
    that all of them stop."""
    saved_file = Path(config.output_dir) / CONFIG_FILE
    if config.resume is None or not saved_file.is_file():
        return
    saved = PretrainConfig.saved_settings(saved_file.read_text()).get("tasks", list(TASKS))
    if list(saved) != config.tasks:
        raise ValueError(f"the run in {config.output_dir} trained --tasks {' '.join(saved)}; it cannot be resumed with "
                         f"--tasks {' '.join(config.tasks)}: resume with its tasks, or start a new run in another folder")


def pretrain(config: PretrainConfig, hub_api=None) -> dict:
    """Run a pretraining described by `config`; returns the summary also written to `training_results.json`.

    The final model goes to `<output_dir>/model` (see `pretraining.config` for the whole layout of the output folder).
    One run per folder: a folder holding another run is refused unless the run resumes it (`resume`) or replaces it
    (`overwrite`: its files are removed first); a lock keeps a second process out while this one writes.

    `hub_api` (an `HfApi`-like object) is used for `push_to_hub` instead of a real `HfApi` (tests pass a stand-in).
    """
    config.check_required()
    replacing = config.overwrite and config.resume is None  # a resume removes nothing
    check_run_folder(config.output_dir, RUN_OUTPUTS, overwrite=config.overwrite or config.resume is not None,
                     resumable=True,
                     inputs={"--input": config.input, "--prerendered": config.prerendered} if replacing else None)
    _check_sources(config)
    _refuse_other_tasks(config)
    if config.push_to_hub:
        check_push_possible(hub_api)  # now, not after the training whose model it would push
    with contextlib.ExitStack() as held:
        return _pretrain(config, hub_api, held)


def _check_sources(config: PretrainConfig) -> None:
    """Refuse a backbone or pre-rendered store that cannot be had, before the pseudo-labels are computed (an hour on
    ChEMBL) rather than after: the backbone's config.json is read (from its folder, the cache or the Hub), the store's
    manifest opened."""
    spec = str(config.backbone)
    if spec not in MODEL_PRESETS:
        check_model_exists(spec)
        if not spec.endswith((".pth", ".pt")):
            read_model_config(spec)
    if config.prerendered:
        PrerenderedImages(config.prerendered)
    if config.resume is not None and config.resume != "latest":
        checkpoint = Path(config.resume).expanduser()
        if not (checkpoint / STATE_FILE).is_file():
            what = "does not exist" if not checkpoint.exists() else f"is not a complete checkpoint (no {STATE_FILE})"
            raise FileNotFoundError(f"--resume {config.resume} {what}: give a folder checkpoints/step_N of a run, or "
                                    "'latest'")


# ---------------------------------------------------------------------------------------------------- the stages
@dataclass
class Molecules:
    """The run's molecules with their pseudo-labels, and which of them train and which are held out."""

    table: PretrainingTable
    train: "object"  # np.ndarray of positions in the table
    valid: "object"


@dataclass
class Encoder:
    """The model being pretrained and the processor saved with it (it draws both views, and its normalisation feeds
    the training step)."""

    model: "object"
    processor: "object"

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size


@dataclass
class Batches:
    """How the molecules reach the model: the loaders, and what the run's opening line says about them."""

    train: "object"  # DataLoader of training batches (one sampler for all processes)
    valid: "object | None"  # DataLoader of held-out batches, None without a held-out part
    per_epoch: int  # forward passes of an epoch, per process
    workers: int  # drawing workers per process
    store_text: str  # what the pre-rendered store holds of the molecules ("" without one)


@dataclass
class StepPlan:
    max_steps: int
    steps_per_epoch: int


@dataclass
class Trained:
    """The end of the loop: the model as the loop holds it (prepared), the loop's state and the last validation."""

    model: "object"
    state: "object"  # loop.LoopState
    final_valid: dict | None


def _pretrain(config: PretrainConfig, hub_api, held) -> dict:
    started = time.perf_counter()
    accelerator, config = _open_run(config, held)
    molecules = _read_molecules(config, accelerator)
    encoder = _build_encoder(config, molecules, accelerator)
    batches = _build_batches(config, accelerator, molecules, encoder)
    plan = _plan_steps(config, batches)
    _report_plan(config, accelerator, molecules, batches, plan)
    trained = _train(config, accelerator, encoder, batches, plan, molecules.table.ks)
    summary = None
    if accelerator.is_main_process:
        summary = _summary(config, molecules, plan, trained, accelerator.num_processes, time.perf_counter() - started)
        _save(config, summary, trained, encoder.processor, hub_api, accelerator)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary or {}


def _open_run(config: PretrainConfig, held) -> tuple["object", PretrainConfig]:
    """The accelerator, and the config as this run uses and saves it (augmentation's place resolved); the main
    process holds the run folder and writes the config into it."""
    # Pseudo-labels may be computed on the main process while the others wait at a barrier: allow for it.
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(hours=2))],
    )
    world = accelerator.num_processes
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} (the global batch) cannot be split evenly over {world} processes")
    output_dir = Path(config.output_dir)
    # resolved here, and saved so: a resumed run must augment where this one did (the caller's config is left alone)
    config = dataclasses.replace(config, augment_on=_resolve_augment_on(config, output_dir / CONFIG_FILE,
                                                                         accelerator.device.type))
    if accelerator.is_main_process:
        replace = config.overwrite and config.resume is None
        held.enter_context(hold_run_folder(output_dir, RUN_OUTPUTS if replace else ()))
        if config.resume:
            _check_resumed_config(config, output_dir / CONFIG_FILE, accelerator)
        write_text_atomically(output_dir / CONFIG_FILE, config.to_json())
    accelerator.wait_for_everyone()
    return accelerator, config


def _read_molecules(config: PretrainConfig, accelerator) -> Molecules:
    table = load_pretraining_table(config, accelerator)
    train_pos, valid_pos = split_positions(len(table.smiles), config, accelerator.num_processes)
    if len(train_pos) < config.batch_size:
        raise ValueError(f"{len(train_pos)} training molecules cannot fill one batch of {config.batch_size}")
    return Molecules(table, train_pos, valid_pos)


def _build_encoder(config: PretrainConfig, molecules: Molecules, accelerator) -> Encoder:
    set_seed(config.seed)
    model = load_backbone(config.backbone, init_factor=config.init_factor, pseudo_label_classes=molecules.table.ks)
    _start_label_heads_afresh(model, config, accelerator)
    if "contrastive" not in config.tasks:
        # the temperature belongs to the contrastive loss: without it, it is kept as it is (and a parameter without
        # a gradient would stall distributed data parallel)
        model.logit_scale.requires_grad_(False)
    # the processor saved with the model draws the pretraining pictures too: its drawing settings apply to both
    processor = load_processor(config.backbone, size=model.config.vision_config.image_size)
    processor.standardize = config.standardize  # the table's SMILES are already prepared; saved for users of the model
    return Encoder(model, processor)


def _build_batches(config: PretrainConfig, accelerator, molecules: Molecules, encoder: Encoder) -> Batches:
    """Training batches group molecules of one fine pseudo-class (`GroupedClassBatchSampler`); drawing workers share
    the cores with the training step; held-out batches are fixed. Both views are drawn through the encoder's
    processor, the one saved with the model."""
    table, train_pos, valid_pos = molecules.table, molecules.train, molecules.valid
    world, rank = accelerator.num_processes, accelerator.process_index
    image_size, processor = encoder.image_size, encoder.processor
    store = PrerenderedImages(config.prerendered) if config.prerendered else None
    # Molecules are found in the store by SMILES; those it lacks are drawn during training, so say how many it has
    # (a store drawn from another file, or from other SMILES of the same molecules, silently gives no speed-up).
    store_slots = store.slots_for(table.smiles) if store is not None else None
    store_text = ""
    if store is not None:
        found = int((store_slots >= 0).sum())
        store_text = (f"; pre-rendered store {config.prerendered} ({found} of {len(table.smiles)} molecules in it"
                      + ("" if found == len(table.smiles) else "; the others are drawn") + ")")

    def dataset(positions, **kwargs):
        smiles = [table.smiles[i] for i in positions]
        slots = store_slots[positions] if store is not None else None
        labels = table.labels[positions] if table.ks else None  # contrastive only: no classification targets
        return TwoViewDataset(smiles, labels, seed=config.seed, size=image_size,
                              augmentation=config.augmentation, ids=table.ids[positions],
                              coordinate_cache_size=config.coordinate_cache_size, prerendered=store, store_slots=slots,
                              augment_on=config.augment_on, processor=processor,
                              styled_view="contrastive" in config.tasks, **kwargs)

    if table.ks:
        fine = int(np.argmax(table.ks))  # batches group molecules of the finest label set
        sampler = GroupedClassBatchSampler(table.labels[train_pos, fine], group_size=config.group_size,
                                           groups_per_batch=config.groups_per_batch, num_replicas=world, rank=rank,
                                           seed=config.seed, drop_last=True)
    else:  # contrastive only: no pseudo-classes to group by
        sampler = ShuffledBatchSampler(len(train_pos), config.batch_size, seed=config.seed, drop_last=True,
                                       num_replicas=world, rank=rank)
    workers = _default_workers(world) if config.num_workers is None else config.num_workers
    if accelerator.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Drawing workers and the training step share the cores. An OpenMP thread without a core of its own makes
        # every parallel region wait for it: on 2 cores with a busy worker, 2 threads ran a step 30x slower than 1.
        torch.set_num_threads(max(1, available_cores() // world - workers))
    loader_kwargs = dict(num_workers=workers, collate_fn=collate_two_views, pin_memory=torch.cuda.is_available())
    if workers > 0:
        loader_kwargs.update(persistent_workers=True, prefetch_factor=4)
    train_loader = DataLoader(dataset(train_pos), batch_sampler=EpochBatches(sampler), **loader_kwargs)
    valid_loader = None
    if len(valid_pos):
        per_process = config.batch_size // world
        valid_batch = min(per_process, len(valid_pos) // world)
        valid_loader = DataLoader(dataset(valid_pos, stream=VALID_STREAM),
                                  batch_sampler=FixedBatches(range(len(valid_pos)), valid_batch, world, rank),
                                  num_workers=min(workers, 4), collate_fn=collate_two_views)
    return Batches(train_loader, valid_loader, len(sampler), workers, store_text)


def _plan_steps(config: PretrainConfig, batches: Batches) -> StepPlan:
    steps_per_epoch = max(1, batches.per_epoch // config.gradient_accumulation_steps)
    return StepPlan(config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch)), steps_per_epoch)


def _report_plan(config: PretrainConfig, accelerator, molecules: Molecules, batches: Batches, plan: StepPlan) -> None:
    table, world = molecules.table, accelerator.num_processes
    accelerator.print(
        f"{len(table.smiles)} molecules ({len(molecules.train)} train, {len(molecules.valid)} validation), "
        f"{_tasks_text(config, table.ks)}; {world} process(es) x {config.batch_size // world} molecules a batch, {batches.per_epoch} "
        f"batches an epoch; {plan.max_steps} optimizer steps ({plan.max_steps / plan.steps_per_epoch:.2f} epochs); "
        f"{batches.workers} drawing worker(s) per process{batches.store_text}; "
        f"{torch.get_num_threads()} torch thread(s) per process; optimizer {config.optimizer}, gradient clipping "
        f"{config.max_grad_norm if config.max_grad_norm else 'none'}")


def _train(config: PretrainConfig, accelerator, encoder: Encoder, batches: Batches, plan: StepPlan,
           ks: list[int]) -> Trained:
    """The loop, with a validation before the first step of a new run (validation_initial.json) and after the last."""
    output_dir = Path(config.output_dir)
    optimizer = build_pretrain_optimizer(encoder.model, config)
    scheduler = build_scheduler(optimizer, config.schedule, warmup_steps=config.warmup_steps,
                                total_steps=plan.max_steps)
    step = PretrainStep(ks, dump_dir=config.debug_dump_dir, rank=accelerator.process_index,
                        processor=encoder.processor, augmentation=config.augmentation)
    evaluate = (make_evaluator(accelerator, step, batches.valid, ks, contrastive="contrastive" in config.tasks)
                if batches.valid is not None else None)
    settings = LoopSettings(
        output_dir=str(output_dir), max_steps=plan.max_steps,
        gradient_accumulation_steps=config.gradient_accumulation_steps, max_grad_norm=config.max_grad_norm,
        log_every=config.log_every, eval_every=config.eval_every if evaluate else None, save_every=config.save_every,
        save_last=config.save_every is not None, save_total_limit=config.save_total_limit,
        select_key="valid_loss" if evaluate else None, progress=config.progress,
    )
    loop = TrainingLoop(accelerator, encoder.model, optimizer, batches.train, settings, scheduler=scheduler,
                        evaluate=evaluate, compute_loss=step)
    initial_file = output_dir / "validation_initial.json"
    resuming = config.resume is not None and (config.resume != "latest" or latest_checkpoint(output_dir) is not None)
    if evaluate is not None and not resuming and not initial_file.exists():
        initial = evaluate(loop.model)
        if accelerator.is_main_process:
            write_text_atomically(initial_file, json_text(initial))
    state = loop.run(resume=config.resume)
    final_valid = None
    if evaluate is not None:
        last = state.history[-1] if state.history else None
        final_valid = ({k: v for k, v in last.items() if k.startswith("valid_")}
                       if last and last.get("step") == state.global_step else evaluate(loop.model))
    return Trained(loop.model, state, final_valid)


def _save(config: PretrainConfig, summary: dict, trained: Trained, processor, hub_api, accelerator) -> None:
    """training_results.json, and the model folder (<output-dir>/model) that a user loads and --push-to-hub uploads
    (main process only)."""
    output_dir = Path(config.output_dir)
    model_dir = output_dir / MODEL_DIR
    summary["model_dir"] = str(model_dir)
    card = {
        "title": f"MoleCLIP encoder pretrained on {Path(config.input).name}",
        "backbone": describe_backbone(config.backbone),
        "training_summary": summary["card_summary"],
        "repo_id": config.push_to_hub,
        "extra_tags": "- moleclip-pretraining",
    }
    write_text_atomically(output_dir / RESULTS_FILE, json_text(summary))
    # The model folder is what a user loads and what goes to the Hub: weights, config, processor, code, card,
    # and a copy of the results; checkpoints, logs and pseudo-labels stay beside it in the run folder.
    save_model_dir(model_dir, unwrap(trained.model), processor, card=card,
                   extra_files={RESULTS_FILE: json_text(summary)})
    accelerator.print(f"model saved to {model_dir}")
    if config.push_to_hub:
        url = push_model_dir(model_dir, config.push_to_hub, private=config.hub_private or None, api=hub_api,
                             commit_message=f"MoleCLIP pretraining: {trained.state.global_step} steps")
        summary["hub_commit"] = url
        write_text_atomically(output_dir / RESULTS_FILE, json_text(summary))
        accelerator.print(f"pushed to the Hub: {url}")


def _optimizer_text(config: PretrainConfig) -> str:
    """The optimiser as a person should read it: Adam's decay is an L2 term, AdamW's is decoupled."""
    name = OPTIMIZER_TEXT[config.optimizer]
    clipping = f"gradient norm clipped at {config.max_grad_norm:g}" if config.max_grad_norm else "no gradient clipping"
    return (f"{name}, encoder lr {config.encoder_lr:g} (decay {config.encoder_weight_decay:g}), classifier lr "
            f"{config.classifier_lr:g} (decay {config.classifier_weight_decay:g}), {clipping}")


def _tasks_text(config: PretrainConfig, ks: list[int]) -> str:
    """The objective as the run's opening line and the model card say it."""
    classification = f"classification (K = {', '.join(map(str, ks))})"
    if config.tasks == list(TASKS):
        return f"contrastive + {classification}"
    return "contrastive only" if config.tasks == ["contrastive"] else f"{classification} only"


def _summary(config: PretrainConfig, molecules: Molecules, plan: StepPlan, trained: Trained, world: int,
             seconds: float) -> dict:
    """What training_results.json holds, with the model card's summary line."""
    table, state, final_valid = molecules.table, trained.state, trained.final_valid
    train_pos, valid_pos = molecules.train, molecules.valid
    output_dir = Path(config.output_dir)
    rows = []
    metrics = output_dir / "metrics.csv"
    if metrics.is_file():
        with open(metrics, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("loss")]
    def parts(row):
        return {k: float(v) for k, v in row.items()
                if v not in (None, "") and not k.startswith("valid_") and (k.endswith("loss") or "_loss_" in k)}

    first, last = (parts(rows[0]), parts(rows[-1])) if rows else ({}, {})
    initial = output_dir / "validation_initial.json"
    initial_valid = json.loads(initial.read_text()) if initial.is_file() else None
    epochs = state.global_step / plan.steps_per_epoch
    molecules = state.global_step * config.batch_size * config.gradient_accumulation_steps
    loss_text = (f"train loss {first.get('loss', float('nan')):.3f} -> {last.get('loss', float('nan')):.3f}"
                 if rows else "no loss logged")
    if final_valid:
        loss_text += f"; validation loss {final_valid['valid_loss']:.3f}"
    views = 2 if "contrastive" in config.tasks else 1  # the classification task alone reads the plain drawing only
    grouping = f"groups of {config.group_size} of one pseudo-class" if table.ks else "shuffled"
    card = (f"{state.global_step} optimizer steps ({epochs:.2f} epochs over {len(train_pos):,} molecules of "
            f"`{Path(config.input).name}`), batch {config.batch_size * config.gradient_accumulation_steps} "
            f"({grouping}), {world} process(es); {_tasks_text(config, table.ks)}; {_optimizer_text(config)}, "
            f"{config.schedule} schedule; {loss_text}")
    return {
        "tasks": list(config.tasks), "steps": state.global_step, "max_steps": plan.max_steps, "epochs": epochs, "molecules_seen": molecules,
        "images_seen": views * molecules, "train_molecules": int(len(train_pos)), "valid_molecules": int(len(valid_pos)),
        "pseudo_label_ks": table.ks, "pseudo_labels": table.source, "processes": world, "wall_seconds": seconds,
        "first_logged": first, "last_logged": last, "initial_validation": initial_valid, "final_validation": final_valid,
        "best_valid_loss": state.best_value, "best_step": state.best_step, "card_summary": card,
        "config": dataclasses.asdict(config),
    }
