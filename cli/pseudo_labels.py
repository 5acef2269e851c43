"""Structural pseudo-labels for pretraining: MACCS keys clustered by mini-batch K-means, one label column per K.

The output Parquet has a `smiles` column and one int32 column `label_k<K>` per K; `moleclip pretrain --input` (and
`training/pretrain.py --input`) reads it directly (the largest K groups the batches). Molecules that do not parse are
left out and listed in the summary, with their lines in the input file. With `--standardize parent` the molecules
are standardised first: the `smiles` column then holds the parents (what pretraining draws), `input_smiles` the strings
given, and the file records the setting so that `moleclip pretrain` can check it.

Examples:
  moleclip pseudo-labels --input chembl.smi.gz --k 300 3000 --output labels.parquet
  moleclip pseudo-labels --input zinc.csv.gz --k auto --output labels.parquet         # knee of the K scan
  moleclip pseudo-labels --input mols.csv --k auto --scan-k 3 5 10 20 50 100 --output labels.parquet
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

NAME = "pseudo-labels"
HELP = "MACCS keys + mini-batch K-means pseudo-labels for pretraining (Parquet)"


def _k_value(text: str):
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"K must be an integer or 'auto', got {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"K must be at least 2, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_input_arguments, add_standardize_argument

    add_input_arguments(parser)
    add_standardize_argument(parser, "none", "labels and drawings are then the parents'")
    parser.add_argument("--output", required=True, help="the pseudo-label table to write (.parquet)")
    parser.add_argument("--k", nargs="+", type=_k_value, required=True, metavar="K",
                        help="numbers of clusters, one label column each (paper: 300 3000), or 'auto' for the knee "
                             "of the inertia curve")
    parser.add_argument("--scan-k", nargs="+", type=_positive_int, default=None, metavar="K",
                        help="K values scanned by --k auto (default: the paper's 3 5 7 10 ... 3000)")
    parser.add_argument("--scan-sample-size", type=_positive_int, default=None,
                        help="scan on a random subset of this many molecules (labels still use all of them)")
    parser.add_argument("--seed", type=int, default=0, help="K-means random state")
    parser.add_argument("--n-jobs", type=_positive_int, default=None,
                        help="processes for the MACCS keys and threads for K-means (default: all cores)")
    parser.add_argument("--batch-size", type=_positive_int, default=20000, help="K-means mini-batch size (paper: 20000)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    from moleclip.processing.pseudo_labels import K_SCAN, compute_pseudo_labels, plot_k_scan, write_pseudo_labels

    from moleclip.training.outputs import check_writable, write_atomically

    from ._common import read_input

    ks = args.k
    auto = "auto" in ks
    if auto and len(ks) > 1:
        raise ValueError("--k auto cannot be combined with explicit K values")
    if args.scan_k is not None and not auto:
        raise ValueError("--scan-k is only used with --k auto")
    output = Path(args.output)
    if output.suffix.lower() != ".parquet":
        raise ValueError(f"--output must be a .parquet file, got {output.name}")
    check_writable(output, "--output", {"--input": args.input})  # now, not after the fingerprints and K-means (an hour on ChEMBL)

    started = time.perf_counter()
    table = read_input(args.input, args.smiles_column)
    smiles, line_numbers = table.smiles, table.line_numbers
    if not smiles:
        raise ValueError(f"{args.input} holds no SMILES")
    print(f"read {len(smiles)} SMILES from {args.input}", flush=True)

    frame, info = compute_pseudo_labels(
        smiles, "auto" if auto else ks, seed=args.seed, n_jobs=args.n_jobs,
        scan_ks=(args.scan_k or list(K_SCAN)) if auto else None, batch_size=args.batch_size,
        scan_sample_size=args.scan_sample_size, progress=not args.no_progress, standardize=args.standardize,
    )
    write_atomically(output, lambda tmp: write_pseudo_labels(frame, tmp, standardize=args.standardize))

    lines = [f"molecules: {info['n_valid']} labelled of {info['n_input']} read"]
    skipped = info["skipped"]
    if skipped:
        from moleclip.processing.molecules import list_skipped

        lines.append(f"skipped: {len(skipped)}: {list_skipped(skipped, line_of=lambda i: line_numbers[i])}")
    else:
        lines.append("skipped: 0")
    if auto:
        stem = output.with_suffix("")
        curve_csv, curve_png = Path(f"{stem}.kscan.csv"), Path(f"{stem}.kscan.png")
        from moleclip.training.outputs import write_delimited

        write_delimited(info["curve"], curve_csv)
        plot_k_scan(info["curve"], info["knee"], curve_png)
        lines.append(f"K scan: {', '.join(str(k) for k in info['curve']['k'])}; knee at K = {info['knee']} "
                     f"(curve: {curve_csv}, plot: {curve_png})")
    lines.append("K: " + ", ".join(f"{k} (inertia {info['inertia'][k]:.4g})" for k in info["ks"]))
    seconds = info["seconds"]
    lines.append("time: " + ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
                 + f"; total {time.perf_counter() - started:.1f} s")
    lines.append(f"written: {output}")
    print("\n".join(lines), flush=True)
    return 0
