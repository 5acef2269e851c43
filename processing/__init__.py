"""MoleCLIP processing: molecules, rendering, augmentation, the SMILES image processor, fingerprints, data."""
