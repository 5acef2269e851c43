"""The shared training loop: logging, evaluation with best tracking, atomic checkpoints, exact mid-epoch resume."""

import csv

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset

from moleclip.training.loop import LoopSettings, TrainingLoop, build_optimizer, build_scheduler, checkpoint_dirs


class ToyData(Dataset):
    def __init__(self, n=40):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class SeededBatches:
    """Minimal sampler with the loop's protocol: an order fixed by (seed, epoch), skippable from start_batch."""

    def __init__(self, n, batch_size, seed=0):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start = epoch, start_batch

    def __len__(self):
        return self.n // self.batch_size

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        for b in range(self.start, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]


class ToyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))

    def forward(self, x, y):
        pred = self.net(x).squeeze(-1)
        from transformers.utils import ModelOutput

        loss = torch.nn.functional.l1_loss(pred, y)
        return ModelOutput(loss=loss, l1_loss=loss.detach())


def run(tmp_path, max_steps, resume=None, save_every=None, evaluate=None, select_key=None, eval_every=None,
        save_last=False):
    set_seed(0)
    data = ToyData()
    model = ToyModel()
    optimizer = build_optimizer([{"params": model.parameters(), "lr": 0.05, "weight_decay": 0.0}])
    scheduler = build_scheduler(optimizer, "cosine", warmup_steps=2, total_steps=max_steps)
    loader = DataLoader(data, batch_sampler=SeededBatches(len(data), 8))
    settings = LoopSettings(output_dir=str(tmp_path), max_steps=max_steps, log_every=1, save_every=save_every,
                            save_total_limit=2, progress=False, eval_each_epoch=evaluate is not None and eval_every is None,
                            eval_every=eval_every, select_key=select_key, save_last=save_last)
    loop = TrainingLoop(Accelerator(cpu=True), model, optimizer, loader, settings, scheduler=scheduler, evaluate=evaluate)
    state = loop.run(resume=resume)
    return loop, state


def test_loss_goes_down_and_is_logged(tmp_path):
    loop, state = run(tmp_path, max_steps=30)
    assert state.global_step == 30 and state.epoch == 6
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert len(rows) == 30
    assert float(rows[-1]["loss"]) < 0.6 * float(rows[0]["loss"])
    assert {"lr", "images_per_s", "l1_loss"} <= set(rows[0])


class Killed(Exception):
    pass


def kill(model):
    raise Killed


def test_resume_mid_epoch_gives_identical_weights(tmp_path):
    full, _ = run(tmp_path / "full", max_steps=13)
    # The same run killed at step 9, between checkpoints (every 3 steps; 5 batches per epoch, so mid-epoch).
    with pytest.raises(Killed):
        run(tmp_path / "cut", max_steps=13, save_every=3, evaluate=kill, eval_every=9)
    assert checkpoint_dirs(tmp_path / "cut")[-1].name == "step_6"
    logged = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "cut" / "metrics.csv"))]
    assert logged == list(range(1, 10))  # step 9 was logged just before the evaluation that "killed" the run
    resumed, state = run(tmp_path / "cut", max_steps=13, save_every=3, resume="latest")
    assert state.global_step == 13
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Rows 7-9 of the killed run came after its checkpoint (step 6): the resumed run logs them again, once.
    full_rows = list(csv.DictReader(open(tmp_path / "full" / "metrics.csv")))
    cut_rows = list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))
    assert [int(r["step"]) for r in cut_rows] == list(range(1, 14))
    assert [r["loss"] for r in cut_rows] == [r["loss"] for r in full_rows]


def test_rewinding_to_an_earlier_checkpoint_forgets_the_later_ones(tmp_path):
    run(tmp_path, max_steps=10, save_every=3)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_6", "step_9"]
    # Rewound to step 6 and killed at step 7, before the new run saved anything: the old step 9 is not the newest
    # checkpoint of this run any more, and `--resume latest` must not pick it.
    with pytest.raises(Killed):
        run(tmp_path, max_steps=10, save_every=3, resume=tmp_path / "checkpoints" / "step_6", evaluate=kill, eval_every=7)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_6"]
    aside = tmp_path / "checkpoints" / "rewound_from_step_9"
    assert (aside / "step_9" / "loop_state.json").is_file()  # kept, out of the way: hours of compute are not deleted
    _, state = run(tmp_path, max_steps=10, save_every=3, resume="latest")
    assert state.global_step == 10 and [p.name for p in checkpoint_dirs(tmp_path)] == ["step_6", "step_9"]
    assert (aside / "step_9").is_dir()


def test_checkpoints_are_complete_and_limited(tmp_path):
    run(tmp_path, max_steps=10, save_every=2)
    names = [p.name for p in checkpoint_dirs(tmp_path)]
    assert names == ["step_6", "step_8"]  # limit 2; the final step is not checkpointed (the caller saves the model)
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_last_step_is_checkpointed_on_request_and_a_run_can_continue_past_it(tmp_path):
    run(tmp_path, max_steps=7, save_every=3, save_last=True)  # 7 is between save intervals
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_6", "step_7"]
    _, state = run(tmp_path, max_steps=10, save_every=3, save_last=True, resume="latest")
    assert state.global_step == 10 and checkpoint_dirs(tmp_path)[-1].name == "step_10"
    assert [int(r["step"]) for r in csv.DictReader(open(tmp_path / "metrics.csv"))] == list(range(1, 11))


def test_a_fresh_run_drops_the_rows_of_an_earlier_attempt(tmp_path):
    run(tmp_path, max_steps=4)
    run(tmp_path, max_steps=3)  # no checkpoint to resume: starts at step 0, so the old rows are stale
    assert [int(r["step"]) for r in csv.DictReader(open(tmp_path / "metrics.csv"))] == [1, 2, 3]


def test_half_written_checkpoint_is_ignored(tmp_path):
    run(tmp_path, max_steps=4, save_every=2)
    (tmp_path / "checkpoints" / "step_9.tmp").mkdir()
    assert checkpoint_dirs(tmp_path)[-1].name == "step_2"


def test_evaluation_tracks_best(tmp_path):
    values = iter([3.0, 1.0, 2.0, 0.5, 4.0])
    loop, state = run(tmp_path, max_steps=25, evaluate=lambda m: {"valid_loss": next(values)}, select_key="valid_loss")
    assert [r["valid_loss"] for r in state.history] == [3.0, 1.0, 2.0, 0.5, 4.0]
    assert state.best_value == 0.5 and state.best_epoch == 4


def test_missing_select_key_is_an_error(tmp_path):
    with pytest.raises(KeyError, match="no 'valid_auc'"):
        run(tmp_path, max_steps=5, evaluate=lambda m: {"valid_loss": 1.0}, select_key="valid_auc")


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch moleclip_pwned",))


@pytest.mark.parametrize("damage", ["missing", "garbage", "malicious", "incomplete"])
def test_a_resume_refuses_random_states_it_cannot_restore(tmp_path, monkeypatch, damage):
    # accelerate alone would log "Could not load random states" at info level and resume with other random numbers
    import pickle

    monkeypatch.chdir(tmp_path)
    run(tmp_path / "run", max_steps=4, save_every=2)
    states = checkpoint_dirs(tmp_path / "run")[-1] / "random_states_0.pkl"
    if damage == "missing":
        states.unlink()
    elif damage == "garbage":
        states.write_bytes(b"\x00not a pickle" * 10)
    elif damage == "malicious":
        states.write_bytes(pickle.dumps({"random_state": _Evil()}))
    else:
        states.write_bytes(pickle.dumps({"random_state": None}))
    with pytest.raises((ValueError, FileNotFoundError), match="random_states_0.pkl .*would not reproduce the run"):
        run(tmp_path / "run", max_steps=6, save_every=2, resume="latest")
    assert not (tmp_path / "moleclip_pwned").exists()


def test_adam_steps_are_fused_where_the_device_has_the_kernels():
    model = ToyModel()
    fused = build_optimizer([{"params": model.parameters(), "lr": 0.05, "weight_decay": 1e-5}])
    assert fused.defaults["fused"] is True  # CPU has fused Adam kernels in the pinned torch
    plain = build_optimizer([{"params": model.parameters(), "lr": 0.05, "weight_decay": 1e-5}], kind="adamw",
                            fused=False)
    assert not plain.defaults["fused"] and isinstance(plain, torch.optim.AdamW)
    double = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))  # any floating type has the kernels
    assert build_optimizer([{"params": [double], "lr": 0.1}]).defaults["fused"] is True


def test_compute_loss_is_given_the_loops_progress_on_each_call(tmp_path):
    # a loss that needs the step (pretraining's kill hook and batch dump) gets it from the loop per call, holding no
    # reference to the loop; with gradient accumulation, the micro-batches of one step see the same step
    from moleclip.training.loop import default_loss

    seen = []

    def loss(model, batch, progress):
        seen.append((progress.global_step, progress.epoch, progress.batch_in_epoch))
        return default_loss(model, batch)

    set_seed(0)
    data = ToyData()
    model = ToyModel()
    optimizer = build_optimizer([{"params": model.parameters(), "lr": 0.05, "weight_decay": 0.0}])
    settings = LoopSettings(output_dir=str(tmp_path), max_steps=3, gradient_accumulation_steps=2, log_every=1,
                            progress=False)
    loader = DataLoader(data, batch_sampler=SeededBatches(len(data), 8))  # 5 batches an epoch
    TrainingLoop(Accelerator(cpu=True, gradient_accumulation_steps=2), model, optimizer, loader, settings,
                 compute_loss=loss).run()
    assert seen == [(0, 0, 0), (0, 0, 1), (1, 0, 2), (1, 0, 3), (2, 0, 4), (2, 1, 0)]
