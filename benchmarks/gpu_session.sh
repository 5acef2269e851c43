#!/usr/bin/env bash
# The GPU benchmarks on a lent H100/H200 machine (the `device` tool), which reaches no package index and does not get
# the shared data beside the checkout. Two steps:
#
#   benchmarks/gpu_session.sh prepare   # here: fills .device/ (in .gitignore) with what the GPU machine lacks
#   benchmarks/gpu_session.sh run       # there, with `.device` carried: installs, runs the four GPU measurements
#                                       # (pretrain gpu, pipeline --quick, screening, finetune), copies their four
#                                       # results files to $OUT
# Budget: the device tool allows 10 minutes a command; GPU_WORKERS, GPU_DATASET and GPU_EPOCHS size the run.
#
# The machine's image already has torch (CUDA), transformers, accelerate, huggingface_hub, numpy, pandas, pyarrow,
# scikit-learn, scipy, pillow, matplotlib and tqdm for Python 3.12; it lacks RDKit, datasets, evaluate and kneed (and
# datasets' dill and multiprocess). Those are fetched here as Python 3.12 wheels, without their dependencies, so that
# nothing already installed there is replaced. The data (15 MB) is the pretraining SMILES and MoleculeNet.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=.device
DATA="${MOLECLIP_DATA_DIR:-../shared/data}"

case "${1:-}" in
  prepare)
    rm -rf "$STAGE" && mkdir -p "$STAGE/wheels" "$STAGE/data"
    python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
      --platform any -d "$STAGE/wheels" rdkit datasets evaluate kneed dill multiprocess
    cp -r "$DATA/pretraining" "$DATA/moleculenet" "$STAGE/data/"
    du -sh "$STAGE"
    echo "now: device run with carry [\"$STAGE\"] and command: benchmarks/gpu_session.sh run"
    ;;
  run)
    [ -d "$STAGE/wheels" ] || { echo "no $STAGE/wheels: run 'benchmarks/gpu_session.sh prepare' here first and carry $STAGE" >&2; exit 2; }
    PY="${PYTHON:-python3}"
    "$PY" -m pip install --quiet --no-index --no-deps "$STAGE"/wheels/*.whl
    "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
    "$PY" -m pip check || true  # reported, not fatal: the image's own packages may disagree among themselves
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    export MOLECLIP_DATA_DIR="$PWD/$STAGE/data"
    "$PY" benchmarks/pretrain.py --sections gpu --gpu-workers "${GPU_WORKERS:-14}"
    # the batched augmentation's own cost on the GPU; its own file, so that pretrain_pipeline.json keeps the CPU figures
    "$PY" benchmarks/pretrain.py --sections pipeline --quick --pipeline-output benchmarks/results/pretrain_pipeline_gpu.json
    # ViT-B/16-shaped embedding of 30,000 ZINC molecules with drawing workers, chunked; no kill-and-resume here
    "$PY" benchmarks/screening.py --model base --device cuda --sizes 30000 --workers "${GPU_WORKERS:-14}" \
      --no-resume --results benchmarks/results/screening_gpu.json
    "$PY" -m pytest -q tests/test_augment_batched.py -k cuda || true  # per-sample determinism on CUDA, if pytest is there
    "$PY" benchmarks/finetune_gpu.py --dataset "${GPU_DATASET:-bbbp}" --epochs "${GPU_EPOCHS:-5}" \
      --num-workers "${GPU_WORKERS:-14}"
    if [ -n "${OUT:-}" ]; then
      cp benchmarks/results/pretrain.json benchmarks/results/pretrain_pipeline_gpu.json benchmarks/results/screening_gpu.json \
        benchmarks/results/finetune_gpu.json "$OUT"/
    fi
    ;;
  *)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
