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


# Labels with decimals: float32 holds none of them exactly, so a label widened from float32 shows as -2.4800000190734863
# where the table says -2.48.
ASSAY_LABELS = [f"{-2.48 + 0.37 * i:.2f}".rstrip("0").rstrip(".") for i in range(len(SMILES))]


def finetune_assay_models(root: Path, *extra: str, kinds=("moleclip", "fingerprint")) -> dict[str, Path]:
    """Both kinds finetuned (two seeds, random splits) on `root/assay.csv`: an ID column written with leading zeros,
    the SMILES in a column named Compound_SMILES (not recognised by name: given with --smiles-column) and the decimal
    labels ASSAY_LABELS in logS. Returns {"moleclip": model dir, "fingerprint": model dir, "data": the table}."""
    data = root / "assay.csv"
    pd.DataFrame({"ID": [f"{i:04d}" for i in range(len(SMILES))], "Compound_SMILES": SMILES,
                  "logS": ASSAY_LABELS}).to_csv(data, index=False)
    common = ["--dataset", str(data), "--smiles-column", "Compound_SMILES", "--target-columns", "logS", "--split",
              "random", "--seeds", "1", "2", "--epochs", "2", "--head-lr", "1e-3", "--augmentation", "none",
              "--no-progress", "--batch-size", "8", *extra]
    if "moleclip" in kinds:
        assert cli(["finetune", *common, "--model", "tiny", "--freeze-encoder", "--no-plots",
                    "--output-dir", str(root / "moleclip")]) == 0
    if "fingerprint" in kinds:
        assert cli(["finetune", *common, "--baseline", "fingerprint", "--output-dir", str(root / "fp")]) == 0
    return {"moleclip": root / "moleclip" / "model", "fingerprint": root / "fp" / "model", "data": data}
