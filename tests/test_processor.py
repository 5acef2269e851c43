"""The SMILES image processor: shapes, channel order, normalisation, determinism, settings that act or are refused,
drawing back ends, settings round trip, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image
from rdkit import Chem
from transformers import AutoImageProcessor

from moleclip import InvalidMoleculeError, MoleCLIPImageProcessor
from moleclip.processing import cairo_replay
from moleclip.processing.augment import CLIP_MEAN, CLIP_STD
from moleclip.processing.rendering import DrawingBackendError, fast_backend_available

needs_fast = pytest.mark.skipif(not fast_backend_available(), reason="no Cairo/FreeType libraries for the fast back end")


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
    processor = MoleCLIPImageProcessor(augmentation="intense", randomize_drawing=True, r_groups=True, size=160,
                                       channel_order="bgr", drawing_backend="cairo")
    processor.save_pretrained(tmp_path)
    again = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(again, MoleCLIPImageProcessor)
    assert (again.augmentation, again.randomize_drawing, again.r_groups) == ("intense", True, True)
    assert (again.channel_order, again.drawing_backend) == ("bgr", "cairo")
    assert again.size == {"height": 160, "width": 160}
    assert again("CCO")["pixel_values"].shape == (1, 3, 160, 160)
    assert again.to_dict() == processor.to_dict()


def test_settings_given_when_loading_act_and_unknown_ones_are_refused(tmp_path):
    MoleCLIPImageProcessor(size=96).save_pretrained(tmp_path)
    again = MoleCLIPImageProcessor.from_pretrained(tmp_path, standardize="parent", cache_size=7)
    assert (again.standardize, again.cache_size, again.size["height"]) == ("parent", 7, 96)
    # a misspelt setting would otherwise load a processor that quietly does not standardise
    for load in (MoleCLIPImageProcessor.from_pretrained, AutoImageProcessor.from_pretrained):
        with pytest.raises(TypeError, match="no setting 'standardise'"):
            load(tmp_path, standardise="parent")


def test_defaults_are_saved_explicitly():
    saved = MoleCLIPImageProcessor().to_dict()
    assert saved["size"] == {"height": 224, "width": 224}
    assert (saved["channel_order"], saved["drawing_backend"]) == ("rgb", "hybrid")
    assert (saved["do_resize"], saved["do_rescale"], saved["do_normalize"], saved["do_convert_rgb"]) == (True,) * 4


def test_an_older_saved_config_still_loads():
    # What the processor saved before `size` became a dict and the back end and channel order became settings.
    old = {"size": 224, "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "augmentation": "none",
           "randomize_drawing": False, "r_groups": False, "cache_size": 10, "image_processor_type": "MoleCLIPImageProcessor"}
    processor = MoleCLIPImageProcessor.from_dict(old)
    assert processor.size == {"height": 224, "width": 224} and processor.cache_size == 10
    assert (processor.channel_order, processor.drawing_backend) == ("rgb", "hybrid")


# ---------------------------------------------------------------------------------------------- channel order
def coloured(pixels: np.ndarray, channel: int) -> int:
    """Pixels strongly saturated in `channel` only (uint8 HxWx3)."""
    others = [c for c in range(3) if c != channel]
    return int(((pixels[..., channel] > 180) & (pixels[..., others[0]] < 100) & (pixels[..., others[1]] < 100)).sum())


def test_bgr_puts_red_oxygen_in_channel_2_and_normalises_with_the_statistics_in_order(processor):
    bgr = MoleCLIPImageProcessor(channel_order="bgr")
    smiles = "OCCN"  # a red O label and a blue N label
    pictures = bgr.render_images(smiles)[0]
    assert coloured(pictures[0], 0) > 10  # the pictures themselves stay RGB (viewable, savable)
    rgb_pixels, bgr_pixels = processor(smiles)["pixel_values"], bgr(smiles)["pixel_values"]
    rgb_u8, bgr_u8 = unnormalise(rgb_pixels)[0], unnormalise(bgr_pixels)[0]  # CLIP statistics in the order given
    assert coloured(rgb_u8, 0) > 10 and coloured(rgb_u8, 2) > 10  # red O in channel 0, blue N in channel 2
    assert np.array_equal(bgr_u8, rgb_u8[..., ::-1])  # swapped exactly, then normalised channel by channel
    assert coloured(bgr_u8, 2) == coloured(rgb_u8, 0) > 10  # red oxygen now in channel 2
    # The reference: B, G, R data normalised with CLIP's R, G, B mean and std (blue data with mean[0] = 0.4815).
    torch.testing.assert_close(bgr_pixels, processor.pictures_to_pixel_values([pictures[0][..., ::-1].copy()]),
                               rtol=0, atol=0)
    white = torch.tensor([(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)])
    torch.testing.assert_close(bgr_pixels[0, :, 0, 0], white)


def test_bgr_applies_to_given_images_and_after_augmentation():
    bgr = MoleCLIPImageProcessor(channel_order="bgr", augmentation="default")
    red = Image.new("RGB", (224, 224), (255, 0, 0))
    pixels = bgr(red, augmentation="none")["pixel_values"][0, :, 10, 10]
    expected = torch.tensor([(0 - CLIP_MEAN[0]) / CLIP_STD[0], (0 - CLIP_MEAN[1]) / CLIP_STD[1], (1 - CLIP_MEAN[2]) / CLIP_STD[2]])
    torch.testing.assert_close(pixels, expected)
    pictures, _, _ = bgr.render_images(["CCO", "OCCN"], seed=3)
    torch.testing.assert_close(bgr(["CCO", "OCCN"], seed=3)["pixel_values"],
                               MoleCLIPImageProcessor().pictures_to_pixel_values([p[..., ::-1].copy() for p in pictures]),
                               rtol=0, atol=0)
    assert torch.equal(bgr.pictures_to_pixel_values(pictures), bgr(["CCO", "OCCN"], seed=3)["pixel_values"])


# ------------------------------------------------------------------------------- standard settings act or are refused
def test_standard_settings_act(processor):
    base = processor("CCO")["pixel_values"]
    unnormalised = processor("CCO", do_normalize=False)["pixel_values"]
    torch.testing.assert_close(unnormalised, torch.from_numpy(processor.render_images("CCO")[0][0]).permute(2, 0, 1)[None] / 255.0)
    raw = processor("CCO", do_normalize=False, do_rescale=False)["pixel_values"]
    assert raw.max() == 255
    torch.testing.assert_close(raw, unnormalised * 255)
    halves = processor("CCO", image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])["pixel_values"]
    torch.testing.assert_close(halves, unnormalised * 2 - 1)
    assert processor("CCO", rescale_factor=1 / 510, do_normalize=False)["pixel_values"].max() == pytest.approx(0.5)
    assert processor("CCO", size=96)["pixel_values"].shape == (1, 3, 96, 96)
    assert processor("CCO", size={"height": 96, "width": 96})["pixel_values"].shape == (1, 3, 96, 96)
    assert torch.equal(processor("CCO", data_format="channels_last")["pixel_values"], base.permute(0, 2, 3, 1))
    assert isinstance(processor("CCO", return_tensors="np")["pixel_values"], np.ndarray)
    assert isinstance(processor("CCO", return_tensors=None)["pixel_values"], np.ndarray)
    assert processor("CCO", device="cpu")["pixel_values"].device.type == "cpu"
    assert isinstance(MoleCLIPImageProcessor(return_tensors="np")("CCO")["pixel_values"], np.ndarray)


def test_given_images_of_every_kind(processor):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    expected = processor(Image.fromarray(rgb))["pixel_values"]
    for image in (rgb, torch.from_numpy(rgb), torch.from_numpy(rgb).permute(2, 0, 1), rgb.transpose(2, 0, 1).copy()):
        torch.testing.assert_close(processor(image)["pixel_values"], expected)
    both = processor([torch.from_numpy(rgb), "CCO"])["pixel_values"]  # images and molecules in one batch
    torch.testing.assert_close(both[0], expected[0])
    unresized = processor(rgb, do_resize=False)["pixel_values"]
    assert unresized.shape == (1, 3, 40, 60)
    with pytest.raises(ValueError, match="same shape"):
        processor([rgb, "CCO"], do_resize=False)
    rgba = np.zeros((30, 30, 4), dtype=np.uint8)  # fully transparent: white once composited
    torch.testing.assert_close(processor(rgba)["pixel_values"][0, :, 5, 5], processor("CCO")["pixel_values"][0, :, 0, 0])
    four = processor(rgba, do_convert_rgb=False, image_mean=[0.0] * 4, image_std=[1.0] * 4)["pixel_values"]
    assert four.shape == (1, 4, 224, 224)
    with pytest.raises(ValueError, match="4-channel"):
        processor(rgba, do_convert_rgb=False)
    with pytest.raises(ValueError, match="bgr"):
        processor(rgba, do_convert_rgb=False, image_mean=[0.0] * 4, image_std=[1.0] * 4, channel_order="bgr")
    with pytest.raises(ValueError, match="uint8"):
        processor(rgb.astype(np.float32) / 255)
    grey = rgb[:, :, 0]  # a greyscale array, as cv2.imread(path, 0) gives it: one channel, copied to R, G and B
    expected = processor(Image.fromarray(grey))["pixel_values"]
    for image in (grey, torch.from_numpy(grey)):
        torch.testing.assert_close(processor(image)["pixel_values"], expected)
        torch.testing.assert_close(processor(image, input_data_format="channels_first")["pixel_values"], expected)
    assert processor(grey, do_convert_rgb=False, image_mean=[0.5], image_std=[0.5])["pixel_values"].shape == (1, 1, 224, 224)


@pytest.mark.parametrize("setting, message", [
    (dict(do_center_crop=True), "do_center_crop"), (dict(crop_size=200), "crop_size"), (dict(do_pad=True), "do_pad"),
    (dict(pad_size=300), "pad_size"), (dict(size={"height": 200, "width": 100}), "square"), (dict(size=0), "16 to 4096"),
    (dict(size=-5), "16 to 4096"), (dict(size={"shortest_edge": 224}), "height"), (dict(default_to_square=False), "square"),
    (dict(channel_order="brg"), "channel_order"), (dict(drawing_backend="auto"), "drawing backend"),
    (dict(augmentation="extreme"), "augmentation preset"), (dict(disable_grouping=True), "disable_grouping"),
    (dict(image_std=[0.0, 1.0, 1.0]), "image_std"), (dict(data_format="channels_middle"), "data_format"),
])
def test_settings_that_cannot_act_are_refused(processor, setting, message):
    with pytest.raises(ValueError, match=message):
        MoleCLIPImageProcessor(**setting)
    with pytest.raises(ValueError, match=message):
        processor("CCO", **setting)


def test_unknown_settings_are_refused(processor):
    with pytest.raises(TypeError, match="no setting 'colour'"):
        MoleCLIPImageProcessor(colour="red")
    with pytest.raises(TypeError, match="unexpected argument 'colour'"):
        processor("CCO", colour="red")
    with pytest.raises(ValueError, match="return_tensors"):
        processor("CCO", return_tensors="tf")


# --------------------------------------------------------------------------------------------- drawing back end
@needs_fast
def test_drawing_backend_acts(processor):
    kwargs = dict(randomize_drawing=True, seed=4)
    hybrid = processor("OC(=O)c1ccc(Cl)cc1N", **kwargs)["pixel_values"]
    assert torch.equal(hybrid, processor("OC(=O)c1ccc(Cl)cc1N", drawing_backend="fast", **kwargs)["pixel_values"])
    assert not torch.equal(hybrid, processor("OC(=O)c1ccc(Cl)cc1N", drawing_backend="cairo", **kwargs)["pixel_values"])
    plain = processor("OC(=O)c1ccc(Cl)cc1N")["pixel_values"]
    assert torch.equal(plain, processor("OC(=O)c1ccc(Cl)cc1N", drawing_backend="cairo")["pixel_values"])
    assert not torch.equal(plain, processor("OC(=O)c1ccc(Cl)cc1N", drawing_backend="fast")["pixel_values"])


def test_a_drawing_backend_that_cannot_run_fails_even_when_skipping(monkeypatch):
    monkeypatch.setenv("MOLECLIP_FAST_RENDER", "0")
    for key, value in (("loaded", False), ("lib", None), ("reason", "")):
        monkeypatch.setitem(cairo_replay._CAIRO_STATE, key, value)
    processor = MoleCLIPImageProcessor(randomize_drawing=True)
    with pytest.raises(DrawingBackendError, match="drawing_backend='cairo'"):
        processor(["CCO", "c1ccccc1"], on_error="skip")  # not a bad molecule: never skipped
    assert processor("CCO", drawing_backend="cairo")["pixel_values"].shape == (1, 3, 224, 224)
    assert processor("CCO", randomize_drawing=False)["pixel_values"].shape == (1, 3, 224, 224)  # hybrid's plain: RDKit


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
    last = processor(["xx", "CCO"], on_error="skip", data_format="channels_last")["pixel_values"]
    assert last.shape == (1, 224, 224, 3)
    assert processor(["xx"], on_error="skip", data_format="channels_last")["pixel_values"].shape == (0, 224, 224, 3)


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
    from moleclip.processing.molecules import InvalidMoleculeError

    with pytest.raises(InvalidMoleculeError, match="not a SMILES string"):  # a bad entry, skippable like any other
        processor([3.14])
    with pytest.raises(TypeError):
        processor(3.14)
    with pytest.raises(ValueError, match="not both"):
        processor("CCO", smiles="CCO")
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        processor("CCO", augmentation="extreme")
    with pytest.raises(ValueError, match="no molecules"):
        processor([])


# ------------------------------------------------------------------------------- normalisation on numpy and on torch
def test_normalisation_numerics_and_layout_on_both_paths():
    # the one normalisation: pictures_to_pixel_values (numpy) and normalize_pixels (torch, for uint8 batches on a
    # device) give the same numbers, CLIP's statistics in R, G, B order
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
    processor = MoleCLIPImageProcessor(size=32, do_resize=False)
    out = processor.pictures_to_pixel_values(list(images))
    assert out.shape == (3, 3, 32, 48) and out.dtype == torch.float32 and out.is_contiguous()
    expected = ((images / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)).transpose(0, 3, 1, 2)
    assert np.allclose(out.numpy(), expected, atol=1e-5)
    batch = torch.from_numpy(images)
    assert torch.equal(processor.normalize_pixels(batch), out)
    assert torch.equal(processor.normalize_pixels(batch.permute(0, 3, 1, 2).contiguous(),
                                                  input_data_format="channels_first"), out)
    assert torch.equal(processor.normalize_pixels(batch, data_format="channels_last"), out.permute(0, 2, 3, 1))
    red = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    red[..., 0] = 255
    for channels in (processor.pictures_to_pixel_values(list(red))[0, :, 0, 0],
                     processor.normalize_pixels(torch.from_numpy(red))[0, :, 0, 0]):
        assert channels[0] > 1.5 and channels[1] < -1.5 and channels[2] < -1.4  # RGB order kept
    half = MoleCLIPImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    grey = np.full((1, 2, 2, 3), 51, dtype=np.uint8)
    assert torch.allclose(half.pictures_to_pixel_values(list(grey)), torch.full((1, 3, 2, 2), -0.6))
    assert torch.allclose(half.normalize_pixels(torch.from_numpy(grey)), torch.full((1, 3, 2, 2), -0.6))
    bgr = MoleCLIPImageProcessor(channel_order="bgr")
    assert torch.equal(bgr.normalize_pixels(batch), bgr.pictures_to_pixel_values(list(images)))
    assert torch.equal(bgr.normalize_pixels(batch), processor.normalize_pixels(batch.flip(-1)))
    unscaled = processor.normalize_pixels(batch, do_rescale=False, do_normalize=False)
    assert torch.equal(unscaled, torch.from_numpy(images).permute(0, 3, 1, 2).float())
    assert CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert CLIP_STD == (0.26862954, 0.26130258, 0.27577711)


def test_normalisation_refuses_bad_input():
    processor = MoleCLIPImageProcessor()
    with pytest.raises(ValueError):
        processor.pictures_to_pixel_values([])
    with pytest.raises(ValueError):
        processor.pictures_to_pixel_values(list(np.zeros((1, 8, 8, 3), dtype=np.float32)))
    with pytest.raises(ValueError):
        processor.pictures_to_pixel_values([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)])
    with pytest.raises(ValueError):
        MoleCLIPImageProcessor(image_std=[0.0, 1.0, 1.0])
    with pytest.raises(TypeError, match="uint8 torch tensor"):
        processor.normalize_pixels(torch.zeros(1, 8, 8, 3))
    with pytest.raises(TypeError, match="uint8 torch tensor"):
        processor.normalize_pixels(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="bgr"):
        MoleCLIPImageProcessor(channel_order="bgr").normalize_pixels(torch.zeros(1, 8, 8, 4, dtype=torch.uint8))
