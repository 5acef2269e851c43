"""The one training loop of the package, on `accelerate`, shared by pretraining and finetuning.

What it owns: device placement, mixed precision, gradient accumulation and clipping, the learning-rate schedule,
progress bars, the metrics log (CSV, and TensorBoard when installed), periodic evaluation with best-model tracking, and
checkpoints that can be resumed mid-epoch from the exact step with the same data order.

What callers provide: a model whose forward returns `.loss` (and optionally loss parts), an optimizer, and a DataLoader
whose `batch_sampler` has `set_epoch(epoch, start_batch=0)` and shards the data across processes itself (see
`training/samplers.py`). The loader is *not* passed through `accelerator.prepare`: our samplers already give each
process its share, and their `start_batch` lets a resumed run skip consumed batches without rendering them.

Checkpoints are written to `<output_dir>/checkpoints/step_<N>.tmp` and renamed to `step_<N>` only when complete, so a
run killed while saving never leaves a checkpoint that looks usable. A run that starts at step N (N = 0 for a fresh
start, or the step of the checkpoint it resumes) first drops the metrics rows after step N: rows an interrupted run
logged after its last checkpoint are logged again by the resumed run, and each step appears once in the log. A run
resumed from an earlier checkpoint than the newest (a rewind) moves the newer ones, the abandoned run's, to
`checkpoints/rewound_from_step_<N>/`, where no resume looks.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import load
from accelerate.utils.constants import RNG_STATE_NAME
from tqdm.auto import tqdm

__all__ = [
    "LoopSettings",
    "LoopState",
    "TrainingLoop",
    "OPTIMIZERS",
    "OPTIMIZER_TEXT",
    "SCHEDULES",
    "build_optimizer",
    "build_scheduler",
    "unwrap",
    "check_random_states",
    "latest_checkpoint",
    "checkpoint_dirs",
]

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "loop_state.json"


@dataclass
class LoopSettings:
    """Settings of the loop itself (model, data and optimiser settings live with the callers)."""

    output_dir: str
    max_steps: int  # optimizer steps in the whole run
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    log_every: int = 10
    eval_every: int | None = None  # optimizer steps; None: only at the end of each epoch (if eval_each_epoch)
    eval_each_epoch: bool = False
    save_every: int | None = None  # optimizer steps; None: no intermediate checkpoints
    save_last: bool = False  # also checkpoint the final step (a later run can then continue past it)
    save_total_limit: int | None = 3
    select_key: str | None = None  # evaluation metric that defines the best model, e.g. "valid_loss"
    select_mode: str = "min"  # "min" or "max"
    progress: bool = True
    log_name: str = "metrics"

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.select_mode not in ("min", "max"):
            raise ValueError(f"select_mode must be 'min' or 'max', got {self.select_mode!r}")


@dataclass
class LoopState:
    """Where the run is; saved with every checkpoint so a resumed run continues exactly."""

    global_step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    best_value: float | None = None
    best_step: int | None = None
    best_epoch: int | None = None
    history: list = field(default_factory=list)  # evaluation records

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)

    @classmethod
    def from_file(cls, path: Path) -> "LoopState":
        return cls(**json.loads(path.read_text()))


# The paper optimises with `torch.optim.Adam`, whose weight decay is an L2 term folded into the gradient (and so scaled
# by Adam's per-parameter step sizes); AdamW decays the weights directly. At lr 5e-6 the two differ a lot, so the
# choice is explicit and "adam" is the default wherever we claim the paper's recipe.
OPTIMIZERS = ("adam", "adamw")
# The optimisers in words, for results, logs and model cards (finetuning and pretraining alike).
OPTIMIZER_TEXT = {
    "adam": "Adam (L2 weight decay added to the gradient, as torch.optim.Adam and the paper's code)",
    "adamw": "AdamW (decoupled weight decay)",
}
SCHEDULES = ("constant", "constant_with_warmup", "cosine")


def _fused_possible(groups) -> bool:
    """Whether PyTorch's fused Adam kernels can take these parameters: floating point, on one device type they support."""
    try:
        # a private torch API that a release may move: its absence only means no fused Adam
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        supported = set(_get_fused_kernels_supported_devices())
    except ImportError:  # a PyTorch without the helper: keep the default implementation
        return False
    params = [p for group in groups for p in group["params"]]
    return all(p.is_floating_point() and p.device.type in supported for p in params) and len(
        {p.device.type for p in params}) == 1


def build_optimizer(param_groups, kind: str = "adam", betas=(0.9, 0.98), eps=1e-6,
                    fused: bool | None = None) -> torch.optim.Optimizer:
    """`torch.optim.Adam` (L2 weight decay in the gradient, the paper's) or `AdamW` (decoupled decay), per-group decay.

    Groups without parameters that require gradients are dropped, so a frozen encoder costs nothing. `fused` (default:
    wherever the parameters' device has the kernels) updates every parameter in one kernel instead of a loop of small
    ones: the same algorithm, rounded differently in the last bits; `benchmarks/optimizer_step.py` measures the gain.
    """
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {kind!r}; choose one of {list(OPTIMIZERS)}")
    groups = []
    for group in param_groups:
        params = [p for p in group["params"] if p.requires_grad]
        if params:
            groups.append({**group, "params": params})
    if not groups:
        raise ValueError("no trainable parameters")
    optimizer_class = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    if fused is None:
        fused = _fused_possible(groups)
    return optimizer_class(groups, betas=tuple(betas), eps=eps, fused=bool(fused) or None)


def build_scheduler(optimizer, kind: str = "constant", warmup_steps: int = 0, total_steps: int = 1):
    """`constant` (the paper), `constant_with_warmup`, or `cosine` (linear warm-up then cosine to zero)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {list(SCHEDULES)}")

    def factor(step: int) -> float:
        if kind != "constant" and warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "cosine":
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model under its wrappers (DDP's `.module`, `torch.compile`'s `._orig_mod`)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        else:
            return model


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (half-written `.tmp` folders are ignored)."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and not p.name.endswith(".tmp")]
    found = [p for p in found if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def _mean_over_processes(acc, sums: dict, count: int) -> dict:
    """The logged losses: each process's sums over `count` batches, as means over those batches and over processes
    (each process's loss covers its own molecules; rank 0's alone would be a sample of the global batch)."""
    values = torch.stack([torch.as_tensor(v, dtype=torch.float32).to(acc.device).reshape(()) for v in sums.values()])
    values = values / count
    if acc.num_processes > 1:
        values = acc.reduce(values, reduction="mean")
    return dict(zip(sums, values.tolist()))


# What every process's random_states_<rank>.pkl must hold for a resumed run to draw what the killed one would have.
_RANDOM_STATE_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")


def check_random_states(checkpoint: Path, process_index: int) -> None:
    """Refuse a checkpoint whose random-number states this process cannot read.

    accelerate's `load_state` logs "Could not load random states" at info level and goes on when that file is
    missing, damaged or tampered with: the run would then continue with other dropout masks and augmentations, no
    longer the run it claims to resume. The file is read here with accelerate's own loader (which never runs code from
    a pickle), and anything short of complete states is an error naming the file.
    """
    file = Path(checkpoint) / f"{RNG_STATE_NAME}_{process_index}.pkl"
    advice = ("resuming from it would not reproduce the run; resume from an earlier checkpoint (--resume PATH) or "
              "start again in a new folder")
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: {advice}")
    try:
        states = load(file)
    except Exception as err:  # unpickling errors of every kind, including refused globals of a tampered file
        raise ValueError(f"{file} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}): "
                         f"{advice}") from err
    missing = [key for key in _RANDOM_STATE_KEYS if not isinstance(states, dict) or key not in states]
    if torch.cuda.is_available() and isinstance(states, dict) and "torch_cuda_manual_seed" not in states:
        missing.append("torch_cuda_manual_seed")
    if missing:
        raise ValueError(f"{file} lacks {', '.join(missing)}: {advice}")


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


class _MetricsLog:
    """Appends rows to `<output_dir>/<name>.csv` (main process only), and to TensorBoard when it is installed.

    `start_step`: the optimizer step the run starts from. Rows of later steps (logged by an interrupted run after the
    checkpoint being resumed, or by an earlier run in the same folder) are dropped, in the CSV and in TensorBoard.
    """

    def __init__(self, accelerator: Accelerator, output_dir: Path, name: str, start_step: int = 0):
        self.enabled = accelerator.is_main_process
        self.path = output_dir / f"{name}.csv"
        self.tensorboard = None
        self.fields: list[str] | None = None
        if self.enabled:
            self._drop_after(start_step)
            try:
                # tensorboard is an optional extra (moleclip[tensorboard])
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"), purge_step=start_step + 1)
            except Exception:  # tensorboard is an optional extra
                self.tensorboard = None

    def _drop_after(self, step: int) -> None:
        if not self.path.exists():
            return
        with open(self.path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields, rows = reader.fieldnames, list(reader)
        kept = [r for r in rows if not _step_of(r) > step]
        if len(kept) == len(rows):
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields or [])
            writer.writeheader()
            writer.writerows(kept)
        tmp.replace(self.path)

    def write(self, row: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = dict(row)
        if self.path.exists() and self.fields is None:
            with open(self.path, newline="") as fh:
                self.fields = next(csv.reader(fh), None)
        new_fields = [k for k in row if k not in (self.fields or [])]
        if self.fields is None or new_fields:
            # A new column (e.g. the first evaluation) rewrites the header so the file stays one table.
            old_rows = []
            if self.path.exists():
                with open(self.path, newline="") as fh:
                    old_rows = list(csv.DictReader(fh))
            self.fields = (self.fields or []) + new_fields
            with open(self.path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(old_rows)
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.fields).writerow(row)
        if self.tensorboard is not None:
            step = int(row.get("step", 0))
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _step_of(row: Mapping[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return float("nan")  # not a step: kept


def _to_device(batch, device):
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return batch


def _batch_size(batch) -> int:
    """Images in a batch: all `*pixel_values` tensors (two views in pretraining), else the leading dimension."""
    images = sum(v.shape[0] for k, v in batch.items() if k.endswith("pixel_values") and isinstance(v, torch.Tensor))
    if images:
        return images
    for value in batch.values():
        if isinstance(value, torch.Tensor):
            return value.shape[0]
    return 0


def default_loss(model, batch, progress: LoopState | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Run the model on a batch dict; the loss is `output.loss`, its parts any `*_loss(es)` fields. A
    `compute_loss` is given the loop's state as `progress` (step, epoch); this one does not need it."""
    output = model(**batch)
    parts = {}
    for key, value in output.items():
        if key.endswith("_loss") and isinstance(value, torch.Tensor):
            parts[key] = float(value.detach())
        elif key.endswith("_losses") and isinstance(value, torch.Tensor):
            for i, v in enumerate(value.detach().reshape(-1)):
                parts[f"{key[:-2]}_{i}"] = float(v)
    return output.loss, parts


class TrainingLoop:
    """Runs `settings.max_steps` optimizer steps of `model` on `train_loader`.

    `evaluate(model) -> dict[str, float]` (optional) is called every `eval_every` steps and/or at the end of each epoch
    on every process (it may use collective ops); when `select_key` is set, the best value is tracked and
    `on_best(model, record)` is called on every process when it improves (e.g. to save the best model).
    `compute_loss(model, batch, progress) -> (loss, parts)` is called for every batch with the loop's `LoopState`
    (step and epoch), so that a loss that needs them holds no reference to the loop.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader,
        settings: LoopSettings,
        scheduler=None,
        evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        on_best: Callable[[torch.nn.Module, dict], None] | None = None,
        compute_loss: Callable = default_loss,
    ):
        self.accelerator = accelerator
        self.settings = settings
        self.output_dir = Path(settings.output_dir)
        self.train_loader = train_loader
        if not hasattr(train_loader.batch_sampler, "set_epoch"):
            raise TypeError("train_loader.batch_sampler must have set_epoch(epoch, start_batch); see training/samplers.py")
        if scheduler is None:
            scheduler = build_scheduler(optimizer, "constant")
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        # accelerate steps a prepared scheduler once per process per optimizer step (it assumes schedules counted in
        # per-process batches); ours count optimizer steps, so one scheduler step per optimizer step on any world size.
        if hasattr(self.scheduler, "split_batches"):
            self.scheduler.split_batches = True
        self.evaluate = evaluate
        self.on_best = on_best
        self.compute_loss = compute_loss
        self.state = LoopState()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Save model/optimizer/scheduler/RNG state and the loop state; atomic via write-then-rename."""
        acc = self.accelerator
        root = self.output_dir / CHECKPOINT_DIR
        final = root / f"step_{self.state.global_step}"
        tmp = root / f"step_{self.state.global_step}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / STATE_FILE).write_text(self.state.to_json())
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            limit = self.settings.save_total_limit
            if limit is not None and limit > 0:
                for old in checkpoint_dirs(self.output_dir)[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def resume(self, checkpoint: str | Path | None) -> bool:
        """Load `checkpoint` ("latest" for the newest in output_dir). Returns False when there is none to load."""
        if checkpoint is None:
            return False
        path = latest_checkpoint(self.output_dir) if str(checkpoint) == "latest" else Path(checkpoint)
        if path is None:
            self.accelerator.print(f"no checkpoint in {self.output_dir / CHECKPOINT_DIR}; starting from scratch")
            return False
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
        check_random_states(path, self.accelerator.process_index)
        self.accelerator.load_state(str(path))
        self.state = LoopState.from_file(path / STATE_FILE)
        # load_state does not restore accelerate's own checkpoint counter; keep it consistent for later saves.
        self.accelerator.project_configuration.iteration = self.state.global_step
        self.accelerator.print(
            f"resumed from {path}: step {self.state.global_step}, epoch {self.state.epoch}, batch {self.state.batch_in_epoch}"
        )
        self._drop_later_checkpoints()
        return True

    def _drop_later_checkpoints(self) -> None:
        """Move this folder's checkpoints past the step the run resumes from out of the way.

        They belong to the run being rewound (resumed from an earlier checkpoint): left in place, `--resume latest`
        after a crash would pick one of them over the new run's own, and the checkpoint limit would keep them while
        deleting the new ones. Like the metrics rows after the resumed step, they are no longer this run's history;
        they may still be hours of someone's compute, so they are moved to `checkpoints/rewound_from_step_<N>/`
        (which no resume reads) rather than deleted.
        """
        acc = self.accelerator
        later = [p for p in checkpoint_dirs(self.output_dir) if int(p.name.split("_")[1]) > self.state.global_step]
        acc.wait_for_everyone()  # every process has read the folder before anything is moved
        if later and acc.is_main_process:
            aside = Path(self.output_dir) / CHECKPOINT_DIR / f"rewound_from_step_{later[-1].name.split('_')[1]}"
            aside.mkdir(exist_ok=True)
            for old in later:
                target = aside / old.name
                if target.exists():
                    shutil.rmtree(target)
                old.rename(target)
            acc.print(f"moved {len(later)} checkpoint(s) of the rewound run past step {self.state.global_step} "
                      f"({', '.join(p.name for p in later)}) to {aside}: no resume reads them; delete that folder "
                      "when they are not wanted")
        acc.wait_for_everyone()

    # ------------------------------------------------------------------ evaluation
    def _run_evaluation(self, log: _MetricsLog) -> None:
        if self.evaluate is None:
            return
        record = dict(self.evaluate(self.model))
        self.model.train()
        record.update(step=self.state.global_step, epoch=self.state.epoch)
        key = self.settings.select_key
        if key is not None:
            if key not in record:
                raise KeyError(f"evaluation returned {sorted(record)}, no {key!r} to select on")
            value = float(record[key])
            best = self.state.best_value
            better = best is None or (value < best if self.settings.select_mode == "min" else value > best)
            if better and math.isfinite(value):
                self.state.best_value, self.state.best_step, self.state.best_epoch = value, self.state.global_step, self.state.epoch
                record["is_best"] = True
                if self.on_best is not None:
                    self.on_best(self.model, record)
        self.state.history.append(record)
        log.write({k: v for k, v in record.items() if not isinstance(v, bool)})

    # ------------------------------------------------------------------ the loop
    def run(self, resume: str | Path | None = None) -> LoopState:
        acc, s = self.accelerator, self.settings
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.resume(resume)
        log = _MetricsLog(acc, self.output_dir, s.log_name, start_step=self.state.global_step)
        sampler = self.train_loader.batch_sampler
        batches_per_epoch = len(sampler)
        if batches_per_epoch == 0:
            raise ValueError("the training data gives no batch (fewer molecules than one batch?)")

        self.model.train()
        bar = tqdm(total=s.max_steps, initial=self.state.global_step, disable=not (s.progress and acc.is_local_main_process),
                   desc="training", unit="step", dynamic_ncols=True)
        window_loss, window_parts, window_items, window_start = 0.0, {}, 0, time.perf_counter()
        micro = 0
        while self.state.global_step < s.max_steps:
            sampler.set_epoch(self.state.epoch, start_batch=self.state.batch_in_epoch)
            # A DataLoader draws a worker seed from the global RNG whenever it starts an epoch. A resumed run starts
            # its epoch at a different point of the RNG stream than the original run did, so keep that draw from
            # touching the stream that dropout uses: then resumed and uninterrupted runs match bit for bit.
            rng_state = torch.get_rng_state()
            batches = iter(self.train_loader)
            torch.set_rng_state(rng_state)
            for batch in batches:
                batch = _to_device(batch, acc.device)
                with acc.accumulate(self.model):
                    loss, parts = self.compute_loss(self.model, batch, self.state)
                    acc.backward(loss)
                    if acc.sync_gradients and s.max_grad_norm:
                        acc.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.state.batch_in_epoch += 1
                micro += 1
                # Summed on the device and read at log steps only: a float() here would wait for the GPU every step.
                window_loss = window_loss + loss.detach().float()
                window_items += _batch_size(batch) * acc.num_processes
                for k, v in parts.items():
                    window_parts[k] = window_parts.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else v)
                if not acc.sync_gradients:
                    continue
                self.state.global_step += 1
                bar.update(1)
                step = self.state.global_step
                if step % s.log_every == 0 or step == s.max_steps:
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    row = {"step": step, "epoch": self.state.epoch,
                           **_mean_over_processes(acc, {"loss": window_loss, **window_parts}, micro),
                           "lr": self.scheduler.get_last_lr()[0], "images_per_s": window_items / elapsed}
                    log.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    window_loss, window_parts, window_items, micro, window_start = 0.0, {}, 0, 0, time.perf_counter()
                if s.eval_every and step % s.eval_every == 0:
                    self._run_evaluation(log)
                if self.state.batch_in_epoch >= batches_per_epoch:
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
                    if s.eval_each_epoch:
                        self._run_evaluation(log)
                last = step >= s.max_steps
                if (s.save_every and step % s.save_every == 0 and not last) or (last and s.save_last):
                    self.save_checkpoint()
                if last:
                    break
            else:
                # The sampler ran out (its last partial batch, if any, was dropped): the epoch is over.
                if self.state.batch_in_epoch > 0:
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
                    if s.eval_each_epoch:
                        self._run_evaluation(log)
        bar.close()
        log.close()
        acc.wait_for_everyone()
        return self.state
