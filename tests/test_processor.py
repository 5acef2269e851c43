"""The SMILES image processor: shapes, RGB order, normalisation, determinism, settings round trip, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image
from rdkit import Chem
from transformers import AutoImageProcessor

from moleclip import InvalidMoleculeError, MoleCLIPImageProcessor
from moleclip.processing.augment import CLIP_MEAN, CLIP_STD


@pytest.fixture(scope="module")
def processor():
    return MoleCLIPImageProcessor()


def unnormalise(pixel_values: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((pixel_values * std + mean) * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def test_single_smiles_and_batch_shapes(processor):
    one = processor("CCO", return_tensors="pt")["pixel_values"]
    many = processor(["CCO", "c1ccccc1", "CC(=O)O"], return_tensors="pt")["pixel_values"]
    assert one.shape == (1, 3, 224, 224) and many.shape == (3, 3, 224, 224)
    assert one.dtype == torch.float32
    torch.testing.assert_close(many[0], one[0])
    assert isinstance(processor("CCO", return_tensors="np")["pixel_values"], np.ndarray)


def test_normalisation_is_clip_statistics_on_rgb(processor):
    pixels = processor("CCO", return_tensors="pt")["pixel_values"]
    white = torch.tensor([(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)])
    corner = pixels[0, :, 0, 0]  # the background is white
    torch.testing.assert_close(corner, white, rtol=1e-5, atol=1e-5)
    assert np.array_equal(unnormalise(pixels)[0], processor.render_images("CCO")[0][0])


def test_channels_are_rgb_not_bgr(processor):
    # RDKit draws oxygen red: in the O-rich drawing some pixels must be strongly red in channel 0 (R), not channel 2.
    image = processor.render_images("O=C(O)C(=O)O")[0][0].astype(int)
    red = (image[..., 0] > 180) & (image[..., 2] < 100) & (image[..., 1] < 100)
    blue = (image[..., 2] > 180) & (image[..., 0] < 100) & (image[..., 1] < 100)
    assert red.sum() > 10 and blue.sum() == 0


def test_mol_and_smiles_inputs_agree(processor):
    a = processor("c1ccccc1O")["pixel_values"]
    b = processor(Chem.MolFromSmiles("c1ccccc1O"))["pixel_values"]
    torch.testing.assert_close(a, b)


def test_pil_images_are_resized_and_normalised(processor):
    image = Image.new("RGB", (100, 50), (255, 0, 0))
    pixels = processor(image)["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    expected = torch.tensor([(1 - CLIP_MEAN[0]) / CLIP_STD[0], (0 - CLIP_MEAN[1]) / CLIP_STD[1], (0 - CLIP_MEAN[2]) / CLIP_STD[2]])
    torch.testing.assert_close(pixels[0, :, 100, 100], expected, rtol=1e-5, atol=1e-5)


def test_seeded_randomness_is_reproducible(processor):
    kwargs = dict(randomize_drawing=True, augmentation="default")
    a = processor(["CCO", "c1ccccc1N"], seed=7, **kwargs)["pixel_values"]
    b = processor(["CCO", "c1ccccc1N"], seed=7, **kwargs)["pixel_values"]
    c = processor(["CCO", "c1ccccc1N"], seed=8, **kwargs)["pixel_values"]
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    plain = processor(["CCO", "c1ccccc1N"])["pixel_values"]
    assert not torch.equal(a, plain)


def test_r_groups_change_the_drawing(processor):
    plain = processor("CCOc1ccccc1Cl")["pixel_values"]
    r = processor("CCOc1ccccc1Cl", r_groups=True)["pixel_values"]
    assert not torch.equal(plain, r)


def test_settings_round_trip(tmp_path):
    processor = MoleCLIPImageProcessor(augmentation="intense", randomize_drawing=True, r_groups=True, size=160)
    processor.save_pretrained(tmp_path)
    again = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(again, MoleCLIPImageProcessor)
    assert (again.augmentation, again.randomize_drawing, again.r_groups, again.size) == ("intense", True, True, 160)
    assert again("CCO")["pixel_values"].shape == (1, 3, 160, 160)


@pytest.mark.parametrize("bad, reason", [("C1CC", "could not be parsed"), ("", "is empty"), ("   ", "is empty"),
                                         ("C(C)(C)(C)(C)C", "could not be parsed")])
def test_bad_smiles_error_names_smiles_and_position(processor, bad, reason):
    with pytest.raises(InvalidMoleculeError) as info:
        processor(["CCO", bad])
    assert info.value.index == 1 and reason in str(info.value) and "position 1" in str(info.value)


def test_batch_can_skip_and_report(processor):
    out = processor(["CCO", "not a smiles", "c1ccccc1", ""], on_error="skip")
    assert out["pixel_values"].shape[0] == 2
    assert out["kept_indices"].tolist() == [0, 2]
    assert [(s.index, s.smiles) for s in out.skipped] == [(1, "not a smiles"), (3, "")]


def test_everything_skipped_gives_an_empty_batch(processor):
    out = processor(["xx", "yy"], on_error="skip")
    assert out["pixel_values"].shape == (0, 3, 224, 224) and len(out.skipped) == 2


@pytest.mark.parametrize("smiles", [
    "[Na+].[Cl-]",                                  # salt
    "C[N+](C)(C)C.[O-]C(=O)C",                       # charged species
    "[Fe+2].c1cc[cH-]c1.c1cc[cH-]c1",                # metal (ferrocene as ions)
    "Cl[Pt](Cl)([NH3])[NH3]",                        # metal complex (cisplatin)
    "C[C@H](N)C(=O)O",                               # stereo centre
    "C/C=C/C",                                       # stereo bond
    "C" * 200,                                       # long chain
])
def test_hard_molecules_draw(processor, smiles):
    assert processor(smiles)["pixel_values"].shape == (1, 3, 224, 224)


def test_huge_molecule_is_refused_clearly(processor):
    with pytest.raises(InvalidMoleculeError, match="heavy atoms"):
        processor("C" * 400)


def test_wrong_inputs(processor):
    with pytest.raises(TypeError):
        processor([3.14])
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        processor("CCO", augmentation="extreme")
    with pytest.raises(ValueError, match="no molecules"):
        processor([])
