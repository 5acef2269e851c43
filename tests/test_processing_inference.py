"""Batched embedding (`training/inference/engine.py`): batches are an implementation detail, never part of the answer."""

import numpy as np
import torch

from moleclip import MoleCLIPConfig, MoleCLIPImageProcessor, MoleCLIPModel
from moleclip.training.inference.engine import embed, predict
from moleclip.training.kinds import ImageKind

SMILES = ["CCO", "c1ccccc1O", "CC(=O)N", "CCCl", "c1ccncc1", "CC(C)O"]


def test_a_seeded_random_drawing_does_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    model = MoleCLIPModel(MoleCLIPConfig.from_preset("tiny", pseudo_label_classes=[])).eval()
    processor = MoleCLIPImageProcessor()
    kwargs = dict(device="cpu", progress=False, randomize_drawing=True, augmentation="default", seed=3)
    whole, kept, _ = embed(ImageKind(model, processor), SMILES, batch_size=len(SMILES), **kwargs)
    in_pairs, kept_pairs, _ = embed(ImageKind(model, processor), SMILES, batch_size=2, **kwargs)
    assert np.array_equal(kept, kept_pairs)
    np.testing.assert_allclose(in_pairs, whole, rtol=1e-5, atol=1e-5)
    # the same seed, the same embeddings
    again, _, _ = embed(ImageKind(model, processor), SMILES, batch_size=2, **kwargs)
    np.testing.assert_array_equal(again, in_pairs)


def test_nothing_drawable_gives_rows_of_the_right_width():
    from moleclip import MoleCLIPForPropertyPrediction

    config = MoleCLIPConfig.from_preset("tiny", pseudo_label_classes=[], num_targets=3)
    processor = MoleCLIPImageProcessor()
    embeds, kept, skipped = embed(ImageKind(MoleCLIPModel(config), processor), ["C1CC", "xx"], device="cpu", progress=False)
    assert embeds.shape == (0, 32) and len(kept) == 0 and len(skipped) == 2
    values, _, _ = predict(ImageKind(MoleCLIPForPropertyPrediction(config), processor), ["C1CC"], device="cpu", progress=False)
    assert values.shape == (0, 3)


def test_a_device_this_machine_lacks_is_refused_by_the_one_device_picker_everywhere():
    # the library paths had pickers of their own that handed the name to torch: an AssertionError ("Torch not
    # compiled with CUDA enabled") or an invalid-ordinal RuntimeError instead of the command line's message
    import pytest

    from moleclip import MoleCLIPForPropertyPrediction
    from moleclip.training.kinds.baselines import FingerprintPredictor
    from moleclip.training.explaining.explainers import FingerprintExplainer, ImageExplainer

    config = MoleCLIPConfig.from_preset("tiny", pseudo_label_classes=[], num_targets=1)
    processor = MoleCLIPImageProcessor()
    missing = f"cuda:{torch.cuda.device_count() + 7}"
    with pytest.raises(ValueError, match=f"--device {missing}: "):
        embed(ImageKind(MoleCLIPModel(config), processor), SMILES, device=missing, progress=False)
    with pytest.raises(ValueError, match=f"--device {missing}: "):
        ImageExplainer(MoleCLIPForPropertyPrediction(config), processor, methods=("attention_rollout",), device=missing)
    with pytest.raises(ValueError, match=f"--device {missing}: "):
        FingerprintExplainer(FingerprintPredictor(in_features=16, num_targets=1, task="regression"), device=missing)
