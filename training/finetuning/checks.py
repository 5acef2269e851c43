"""What a finetuning job refuses before anything is loaded: options that cannot work together or would train
wrongly without a word (`check_args`), and an output folder whose common names (runs/, plots/, model/) no finetune job
wrote (`refuse_foreign_folder`). `job.finetune` calls both first, so a refused job costs nothing and leaves nothing."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["check_args", "refuse_foreign_folder"]


def check_args(args: argparse.Namespace) -> None:
    """Refuse settings that cannot work together, before anything is loaded."""
    if args.baseline and (args.freeze_encoder or args.init_from or args.r_groups):
        raise ValueError("--baseline uses fingerprints: --freeze-encoder, --init-from and --r-groups do not apply")
    if args.baseline and args.push_to_hub:
        raise ValueError("--push-to-hub shares MoleCLIP models; a fingerprint baseline is not one")
    if args.epochs < 1 or (args.final_epochs is not None and args.final_epochs < 1):
        raise ValueError("--epochs and --final-epochs must be >= 1")
    if args.batch_size < 1 or args.eval_batch_size < 1:
        raise ValueError("batch sizes must be >= 1")
    if any(seed < 0 for seed in args.seeds):
        raise ValueError(f"--seeds must be non-negative integers, got {args.seeds}")
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds has repeats: {args.seeds}")
    if any(v <= 0 for v in args.head_lr + args.encoder_lr):
        raise ValueError("learning rates must be positive")
    # Settings torch or the head accept without a word and then train wrongly: a negative clipping norm reverses
    # every gradient, a negative weight decay pushes weights away from zero, a hidden layer of width 0 makes the head
    # predict one constant for every molecule.
    if any(v < 0 for v in args.weight_decay):
        raise ValueError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.max_grad_norm is not None and not args.max_grad_norm > 0:
        raise ValueError(f"--max-grad-norm must be positive (or left out: no clipping), got {args.max_grad_norm}")
    if args.warmup_steps < 0:
        raise ValueError(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    if args.head_dropout and any(not 0 <= v < 1 for v in args.head_dropout):
        raise ValueError(f"--head-dropout must lie in [0, 1), got {args.head_dropout}")
    if args.head_hidden_size is not None and args.head_hidden_size < 1:
        raise ValueError(f"--head-hidden-size must be >= 1, got {args.head_hidden_size}")
    if args.head_num_layers is not None and args.head_num_layers < 0:
        raise ValueError(f"--head-num-layers must be >= 0 (0: one linear layer), got {args.head_num_layers}")
    if args.frozen_views < 1 or args.rf_estimators < 1:
        raise ValueError("--frozen-views and --rf-estimators must be >= 1")
    if not all(c > 0 for c in getattr(args, "svr_c", [1.0])):
        raise ValueError(f"--svr-c values must be positive, got {args.svr_c}")
    if args.init_factor is not None and not args.init_factor > 0:
        raise ValueError(f"--init-factor must be positive, got {args.init_factor}")
    if args.num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {args.num_workers}")
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be >= 1")
    if args.limit is not None and args.limit < 3:
        raise ValueError("--limit must leave at least 3 molecules (one per split part)")
    if not 0 < getattr(args, "coverage", 0.9) < 1:
        raise ValueError(f"--coverage must lie strictly between 0 and 1 (e.g. 0.9), got {args.coverage}")
    if args.init_from and not Path(args.init_from).is_dir():
        raise FileNotFoundError(f"--init-from {args.init_from}: not found (pass the model/ folder a previous "
                                "finetuning wrote)")


def refuse_foreign_folder(folder: Path) -> None:
    """`--overwrite` removes a finetune job's outputs, some of which have common names (runs/, plots/, model/): in a
    folder that no finetune job wrote (no results.json, no runs/search or runs/final of an interrupted job) they are
    the user's own, and are not touched."""
    ours = (folder / "results.json").exists() or any((folder / "runs" / phase).is_dir() for phase in ("search", "final"))
    common = [name for name in ("runs", "plots", "model") if (folder / name).exists()]
    if common and not ours:
        raise FileExistsError(f"{folder} holds {', '.join(common)} that no finetune job wrote there: choose another "
                              "--output-dir (a finetune job writes these names and, with --overwrite, removes them)")
