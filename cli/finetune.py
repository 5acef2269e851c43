"""Finetune MoleCLIP (or a fingerprint baseline) on a property table with the paper's protocol.

    moleclip finetune --model NAME_OR_PATH --dataset esol --output-dir runs/esol \\
        --split scaffold --seeds 1 2 3 --epochs 60 --head-lr 1e-3 1e-4 --augmentation none default
    accelerate launch training/finetune.py ...      # the same, on every GPU or process

Protocol: the data set is split once per seed (scaffold splits are deterministic, so seeds then vary only the model);
every setting of the grid (lists of values are grid axes) is trained once per seed; each run's test score is taken at
its best-validation epoch; settings are compared on their mean validation value only; the chosen setting's runs (or
fresh --final-epochs runs) make the final table. Learning curves record validation and test every epoch; the choices
read validation only. Defaults follow the paper's code: Adam with L2 weight decay 1e-5, betas (0.9, 0.98) and eps 1e-6
for the encoder (lr 5e-6), PyTorch's default betas and eps for the head; batch 64, 60 epochs; the MLP head without
dropout and with PyTorch's default initialisation. Regression targets are standardised with the training part's mean
and std (the paper's code used raw targets; standardising is better on FreeSolv, see BENCHMARKS.md).

Modes:
  (default)                  pictures are drawn and augmented on the fly; encoder and head are trained
  --freeze-encoder           embeddings are computed once; only the head is trained: minutes on a CPU
  --baseline fingerprint     Morgan radius 2, 2048 bits into the same MLP head, same splits, grid and loop
  --baseline random_forest   a random forest on the same bits, same splits and seeds
  --baseline svr             a Tanimoto-kernel SVM (SVR / calibrated SVC) on the same bits, C chosen on validation

Writes <output-dir>/results.json and results.md (the table beside the paper's), plots/, runs/ (each run's
metrics.csv and test_predictions.csv), predictions.csv (every seed's test predictions of the chosen setting, with
the input columns as written) and model/ (the best run of the chosen setting as a complete checkpoint folder; a
random forest is saved with joblib, and `moleclip predict` loads it only with --trust-pickle).

Trust: every seed's model of the chosen setting is kept in model/ensemble/seed_<s>/ (frozen mode: its head only;
the job holds all seeds of the leading and the current setting in memory while searching), with uncertainty.json
(conformal intervals at --coverage, or probability calibration, fitted on validation only) and an applicability
domain (applicability.json); `moleclip predict --uncertainty --domain` uses them and results.md reports them on test.
"""

from __future__ import annotations

import argparse

NAME = "finetune"
HELP = "finetune an encoder (or a fingerprint baseline) on a property table with the paper's protocol"

# Choice lists are spelled out here so that `--help` needs no torch; tests/test_cli.py checks each against the
# package's own list (training.loop.OPTIMIZERS / SCHEDULES, processing.splits.SPLIT_KINDS, augment presets).
HEAD_LRS = (1e-3, 4e-4, 1e-4, 4e-5, 1e-5)
AUGMENTATIONS = ("none", "default", "intense")
SPLIT_KINDS = ("scaffold", "random", "random_scaffold")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "constant_with_warmup", "cosine")
ENCODER_LR = 5e-6
WEIGHT_DECAY = 1e-5
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._common import add_standardize_argument

    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, help="a named set (esol, bace, ...) or a CSV / Parquet file")
    g.add_argument("--data-dir", default=None,
                   help="folder of the named sets (default: $MOLECLIP_DATA_DIR, else ../shared/data beside the checkout)")
    g.add_argument("--smiles-column", default=None,
                   help="the SMILES column of a table (default: found by name: smiles, canonical_smiles, smi, mol)")
    g.add_argument("--target-columns", nargs="+", default=None,
                   help="the columns to predict (default: the named set's; a table's single numeric column, else "
                        "refused)")
    g.add_argument("--task", choices=("regression", "classification"), default=None,
                   help="the task of the targets (default: inferred: classification when every label is 0 or 1)")
    g.add_argument("--split", choices=SPLIT_KINDS, default=None,
                   help="how molecules are split (default: the named set's (scaffold for MoleculeNet, random for "
                        "catalysis), random for files)")
    g.add_argument("--fractions", nargs=3, type=float, default=list(DEFAULT_FRACTIONS),
                   metavar=("TRAIN", "VALID", "TEST"), help="split fractions, summing to 1")
    g.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="one run per seed and setting")
    g.add_argument("--limit", type=int, default=None, help="use only the first N molecules (smoke tests)")
    g.add_argument("--split-column", default=None, metavar="COL",
                   help="a fixed split: COL marks each row train/training, valid/val/validation/dev or test/testing "
                   "(any case); with no valid rows, validation is carved from the training rows by --split and the "
                   "seed. Every seed then uses the same test part")
    g.add_argument("--test-file", default=None, metavar="PATH",
                   help="an external test set (same SMILES and target columns), scored like the test part and "
                   "reported separately; never used for any choice")
    g.add_argument("--group-column", default=None, metavar="COL",
                   help="also report test scores on the rows where COL is 1/true/yes (e.g. MoleculeACE's cliff_mol)")
    add_standardize_argument(g, "none", "saved with the model, so predict prepares new molecules the same way")

    g = p.add_argument_group("model")
    g.add_argument("--model", default="openai/clip-vit-base-patch16",
                   help="MoleCLIP or CLIP checkpoint (folder or Hub name), the paper's .pth, or a preset (tiny, base)")
    g.add_argument("--init-from", default=None, help="start the encoder from this finetuned MoleCLIP checkpoint folder "
                   "(domain-focused pretraining: finetune on kraken_buried_volume first); overrides --model")
    g.add_argument("--freeze-encoder", action="store_true", help="embed once, train only the head")
    g.add_argument("--frozen-views", type=int, default=1,
                   help="augmented embeddings per training molecule and preset in --freeze-encoder mode")
    g.add_argument("--r-groups", action="store_true", help="draw terminal C O N S F Cl Br I atoms as R1..R8 labels")
    g.add_argument("--baseline", choices=("fingerprint", "random_forest", "svr"), default=None,
                   help="Morgan r2 2048-bit baseline: the same MLP head (fingerprint), a random forest or a "
                        "Tanimoto-kernel support vector machine (svr)")
    g.add_argument("--rf-estimators", type=int, default=500, help="trees of --baseline random_forest")
    g.add_argument("--svr-c", type=float, nargs="+", default=[0.1, 1.0, 10.0, 100.0],
                   help="values of C that --baseline svr chooses from, per target on validation")
    g.add_argument("--head-hidden-size", type=int, default=None,
                   help="width of the head's hidden layers (default: the backbone config's (512 for the paper's shape; "
                        "512 for the fingerprint baseline))")
    g.add_argument("--head-num-layers", type=int, default=None,
                   help="hidden layers of the MLP head (default: the backbone config's, 3 as in the paper)")
    g.add_argument("--regression-loss", choices=("l1", "mse"), default="l1",
                   help="training loss of regression targets, on the standardised scale")
    g.add_argument("--init-factor", type=float, default=None,
                   help="weight initialisation scale of a preset's randomly initialised encoder (CLIP's default 1). "
                   "At 1, drawings (mostly white) give nearly the same embedding for every molecule and training "
                   "from scratch collapses to predicting the mean; 5 lets the tiny preset learn")
    g.add_argument("--backbone-seed", type=int, default=0,
                   help="seed for weights a backbone does not provide (the presets' random encoder) and for the "
                   "frozen mode's augmented views")

    g = p.add_argument_group("training (lists are grid axes)")
    g.add_argument("--head-lr", nargs="+", type=float, default=list(HEAD_LRS), help="learning rates of the head")
    g.add_argument("--encoder-lr", nargs="+", type=float, default=[ENCODER_LR],
                   help="learning rates of the encoder (unused with --freeze-encoder and the baselines)")
    g.add_argument("--weight-decay", nargs="+", type=float, default=[WEIGHT_DECAY],
                   help="L2 weight decay (decoupled with --optimizer adamw)")
    g.add_argument("--augmentation", nargs="+", choices=AUGMENTATIONS, default=list(AUGMENTATIONS),
                   help="augmentation presets of the training pictures")
    g.add_argument("--head-dropout", nargs="+", type=float, default=None,
                   help="dropout of the head's hidden layers, a grid axis (default: the backbone config's (0, the "
                        "paper's))")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                   help="adam: L2 weight decay added to the gradient (torch.optim.Adam, the paper's); adamw: "
                   "decoupled weight decay")
    g.add_argument("--epochs", type=int, default=60, help="epochs of every run; its best-validation epoch is kept")
    g.add_argument("--final-epochs", type=int, default=None,
                   help="after the search, train the chosen setting again for this many epochs (the paper: 180-300)")
    g.add_argument("--batch-size", type=int, default=64, help="training molecules per step")
    g.add_argument("--eval-batch-size", type=int, default=128, help="molecules per batch when scoring")
    g.add_argument("--select-on", choices=("loss", "metric"), default="loss",
                   help="pick the epoch (and the setting) by validation loss (the paper) or validation metric")
    g.add_argument("--max-grad-norm", type=float, default=None,
                   help="clip gradients to this norm (default: no clipping, as in the paper)")
    g.add_argument("--scheduler", choices=SCHEDULES, default="constant", help="learning-rate schedule")
    g.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps of the schedule")
    g.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None,
                   help="accelerate's mixed precision (default: accelerate's configuration, else no)")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader workers drawing training pictures")
    g.add_argument("--max-cached-images", type=int, default=20_000,
                   help="keep plain drawings in memory up to this many molecules (150 kB each at 224 px)")
    g.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's for drawing and embedding; 1 while training a head alone "
                   "on a CPU, where thread start-up costs more than the tiny matrix products gain)")

    g.add_argument("--coverage", type=float, default=0.9,
                   help="target coverage of the regression prediction intervals (split-conformal, calibrated on "
                   "validation)")

    g = p.add_argument_group("output")
    g.add_argument("--output-dir", required=True, help="folder of the results, runs, plots and the saved model")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier job in --output-dir (refused without it)")
    g.add_argument("--push-to-hub", default=None, metavar="REPO",
                   help="upload the saved model with its model card; the upload holds the training molecules' SMILES and "
                        "labels (the applicability domain)")
    g.add_argument("--hub-private", action="store_true", help="create the Hub repository as private")
    g.add_argument("--no-plots", action="store_true", help="write no plots")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moleclip finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


# What a random forest or SVM never reads: the neural network's model, head, grid, optimiser and training loop.
NEURAL_ONLY = ("model", "init_factor", "backbone_seed", "frozen_views", "head_hidden_size", "head_num_layers",
               "regression_loss", "head_lr", "encoder_lr", "weight_decay", "augmentation", "head_dropout", "optimizer",
               "epochs", "final_epochs", "batch_size", "eval_batch_size", "select_on", "max_grad_norm", "scheduler",
               "warmup_steps", "mixed_precision", "num_workers", "max_cached_images", "cpu", "threads")


def refuse_ignored_options(args: argparse.Namespace) -> None:
    """`--baseline random_forest` with a neural-network option set to anything but its default is refused, naming the
    options: the forest would silently ignore them. At its default an option says nothing (argparse cannot tell a
    value typed by the user from its default, and an option at its default asks for nothing)."""
    own = {"random_forest": "rf_estimators", "svr": "svr_c"}
    if args.baseline not in own:
        return
    parser = build_parser()
    flags = {action.dest: action.option_strings[-1] for action in parser._actions if action.option_strings}
    others = [name for baseline, name in own.items() if baseline != args.baseline]
    given = [flags[name] for name in (*NEURAL_ONLY, *others) if getattr(args, name) != parser.get_default(name)]
    if given:
        raise ValueError(f"--baseline {args.baseline} does not use {', '.join(given)} (options of other models): "
                         f"leave them out (its own option is {flags[own[args.baseline]]})")


def run(args: argparse.Namespace, hub_api=None) -> int:
    from moleclip.training.finetuning import finetune

    refuse_ignored_options(args)
    finetune(args, hub_api=hub_api)
    return 0
