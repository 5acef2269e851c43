"""The small finetuned models several test modules need: a frozen `tiny` MoleCLIP and a fingerprint MLP, trained for
two epochs on a table whose target is the number of heavy atoms (seconds on a CPU)."""

from pathlib import Path

import pandas as pd

from moleclip_cli.main import main as cli

SMILES = ["C" * k + s for k in range(1, 7) for s in ["", "O", "N", "c1ccccc1"]]
HEAVY = [k + {"": 0, "O": 1, "N": 1, "c1ccccc1": 6}[s] for k in range(1, 7) for s in ["", "O", "N", "c1ccccc1"]]


def finetune_tiny_models(root: Path, smiles=SMILES, *extra: str, names=("moleclip", "fp")) -> dict[str, Path]:
    """Finetune both kinds on `smiles` (targets HEAVY) under `root`; returns {"moleclip": model dir, "fingerprint":
    model dir}. `extra` options go to both finetunes (e.g. "--standardize", "parent")."""
    data = root / "train.csv"
    pd.DataFrame({"smiles": list(smiles), "heavy": HEAVY}).to_csv(data, index=False)
    common = ["--dataset", str(data), "--split", "random", "--seeds", "1", "--epochs", "2", "--head-lr", "1e-3",
              "--augmentation", "none", "--no-progress", "--no-plots", "--batch-size", "8", *extra]
    image, fingerprint = (root / name for name in names)
    assert cli(["finetune", *common, "--model", "tiny", "--freeze-encoder", "--output-dir", str(image)]) == 0
    assert cli(["finetune", *common, "--baseline", "fingerprint", "--output-dir", str(fingerprint)]) == 0
    return {"moleclip": image / "model", "fingerprint": fingerprint / "model"}
