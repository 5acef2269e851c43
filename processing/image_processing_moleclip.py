"""The MoleCLIP image processor: SMILES (or RDKit molecules, or ready images) in, normalised `pixel_values` out.

It travels to the Hugging Face Hub as remote code together with the files it imports (`rendering.py`, `fonts.py`,
`cairo_replay.py`, `augment.py`, `molecules.py`, `standardize.py`; flat relative imports only), so `AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)`
works where this package is not installed (RDKit is still needed to draw).

It follows transformers' image-processor conventions (a `PilBackend` subclass: PIL and numpy, no torchvision): the
standard settings (`size` as {"height", "width"}, `do_resize`, `resample`, `do_rescale`, `rescale_factor`,
`do_normalize`, `image_mean`, `image_std`, `do_convert_rgb`, `data_format`, `input_data_format`, `device`,
`return_tensors`) can be given at construction (saved in preprocessor_config.json) or per call, and they act.
Standard settings that make no sense for drawings of molecules (`do_center_crop`/`crop_size`: cropping cuts atoms
off; `do_pad`/`pad_size`: every picture is already `size`; `default_to_square=False`; `disable_grouping`,
`image_seq_length`) are refused with a message, never accepted and ignored.
"""

import copy
import logging

import numpy as np
import torch
from huggingface_hub.dataclasses import validate_typed_dict
from PIL import Image
from rdkit import Chem
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ChannelDimension, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs
from transformers.utils import TensorType

from .augment import AUGMENTATION_PRESETS, CLIP_MEAN, CLIP_STD, augment
from .molecules import InvalidMoleculeError, SkippedMolecule, describe_skipped
from .standardize import STANDARDIZATIONS
from .rendering import DEFAULT_BACKEND, CoordinateCache, DrawingBackendError, DrawingStyle, check_backend, random_style, render

__all__ = ["CHANNEL_ORDERS", "MoleCLIPImageProcessor", "MoleCLIPImageProcessorKwargs"]

# Larger pictures are refused when the processor is built: a saved preprocessor_config.json with size 20000 would
# otherwise allocate gigabytes for every drawing.
MAX_SIZE = 4096

CHANNEL_ORDERS = ("rgb", "bgr")

# Keys a saved preprocessor_config.json may hold besides the settings.
_SERVICE_KEYS = ("image_processor_type", "processor_class", "feature_extractor_type")
_LAYOUTS = {ChannelDimension.FIRST.value: ChannelDimension.FIRST, ChannelDimension.LAST.value: ChannelDimension.LAST}


class MoleCLIPImageProcessorKwargs(ImagesKwargs, total=False):
    """The settings a MoleCLIP processor takes at construction or per call: transformers' standard image settings
    plus the drawing ones below (see `MoleCLIPImageProcessor`)."""

    augmentation: str | None
    randomize_drawing: bool | None
    r_groups: bool | None
    channel_order: str | None
    drawing_backend: str | None
    standardize: str | None


def _is_image(item) -> bool:
    return (
        isinstance(item, Image.Image)
        or (isinstance(item, np.ndarray) and item.ndim in (2, 3))
        or (isinstance(item, torch.Tensor) and item.ndim in (2, 3))
    )


class MoleCLIPImageProcessor(PilBackend):
    r"""Draws molecules with RDKit at `size` on white, augments them, and normalises them with CLIP statistics.

    Drawing settings:
        augmentation (`str`, "none"): classical augmentation preset applied after drawing: "none", "default", "intense"
            (`augment.AUGMENTATION_PRESETS`).
        randomize_drawing (`bool`, False): draw each image with a random style (line width, font, font size, bond
            length, multiple-bond offset, rotation), the paper's "generation-level" augmentation.
        r_groups (`bool`, False): draw terminal C, O, N, S, F, Cl, Br, I atoms as R1..R8 labels.
        drawing_backend (`str`, "hybrid"): which rasteriser draws: "cairo" (RDKit's MolDraw2DCairo for every picture),
            "fast" (the ctypes Cairo replay of `cairo_replay.py` for every picture) or "hybrid" (RDKit's Cairo for the
            plain style, the replay for random styles). Saved, so a checkpoint draws the same pixels wherever it is
            loaded; a back end that cannot run there fails with a message instead of drawing with another rasteriser.
        channel_order (`str`, "rgb"): "bgr" swaps the channels of every picture (drawn or given) after drawing and
            augmentation and before normalisation, which then applies `image_mean` / `image_std` in the order given:
            the paper's released weights were trained on B, G, R pictures normalised with CLIP's R, G, B statistics
            (mean 0.4815 on the blue channel), and a converted checkpoint's processor says "bgr".
        standardize (`str`, "none"): prepare each molecule before drawing with RDKit's MolStandardize: "none" (as
            written, the paper's) or "parent" (largest organic fragment, neutralised); see `standardize.py`. Saved,
            so a finetuned model prepares new molecules as its training molecules were. Given pictures are not
            changed.
        cache_size (`int`, 10000): molecules whose 2D coordinates are kept, so repeated drawing skips the layout
            (about 70 KiB of memory each: 10,000 take about 0.65 GiB); the cache also stops at an estimated 1 GiB
            (`rendering.DEFAULT_CACHE_MIB`), however large the molecules.

    Standard settings (transformers' names and meanings): `size` ({"height": n, "width": n}, square, 16 to 4096;
    an int n is read as n x n), `do_resize` / `resample` (given images are resized to `size`, bicubic by default;
    drawings are made at `size`), `do_rescale` / `rescale_factor` (x 1/255), `do_normalize` / `image_mean` /
    `image_std` (OpenAI CLIP's), `do_convert_rgb` (given images to RGB, transparency onto white; False keeps their
    channels, e.g. 4, which then need as many means and stds), `data_format` ("channels_first" or "channels_last"
    output), `input_data_format` (layout of given arrays), `device` (where "pt" tensors go), `return_tensors`
    ("pt" unless the processor was made with another; "np" or None give numpy).

    Call with a SMILES string, a list of SMILES, RDKit molecules, or images (PIL, numpy or torch; strings are always
    SMILES, never paths or URLs), mixed freely; any setting above can be overridden for one call. `seed` (int or
    `numpy.random.Generator`) makes random drawing and augmentation reproducible. `on_error="skip"` leaves out
    molecules that cannot be parsed or drawn and reports them in `outputs.skipped` (with `outputs["kept_indices"]`);
    the default raises an error naming the SMILES and its position.
    """

    valid_kwargs = MoleCLIPImageProcessorKwargs
    model_input_names = ["pixel_values"]

    # Defaults: transformers copies each into the instance (no two processors share a list or a size).
    size = {"height": 224, "width": 224}
    do_resize = True
    resample = PILImageResampling.BICUBIC
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = list(CLIP_MEAN)
    image_std = list(CLIP_STD)
    do_convert_rgb = True
    augmentation = "none"
    randomize_drawing = False
    r_groups = False
    channel_order = "rgb"
    drawing_backend = DEFAULT_BACKEND
    standardize = "none"

    def __init__(self, cache_size: int = 10_000, **kwargs):
        for key in _SERVICE_KEYS:
            kwargs.pop(key, None)
        auto_map = kwargs.pop("auto_map", None)
        _refuse_unknown(kwargs, "MoleCLIPImageProcessor has no setting")
        validate_typed_dict(self.valid_kwargs, kwargs)
        super().__init__(**kwargs)
        if auto_map is not None:
            self.auto_map = auto_map
        if isinstance(cache_size, bool) or not isinstance(cache_size, (int, np.integer)) or cache_size < 1:
            raise ValueError(f"cache_size must be a positive integer, got {cache_size!r}")
        self.cache_size = int(cache_size)
        self._coordinates: CoordinateCache | None = None
        self._settings({})  # refuse bad settings now rather than at the first call

    # ---------------------------------------------------------------- settings
    def _settings(self, overrides: dict) -> dict:
        """The processor's settings with one call's overrides (None: the processor's own), standardised and checked."""
        _refuse_unknown(overrides, "unexpected argument")
        overrides = {k: dict(v) if isinstance(v, SizeDict) else v for k, v in overrides.items()}  # e.g. processor.size
        validate_typed_dict(self.valid_kwargs, {k: v for k, v in overrides.items() if v is not None})
        names = self.valid_kwargs.__annotations__
        settings = {}
        for name in names:
            value = overrides.get(name)
            settings[name] = getattr(self, name, None) if value is None else value
        if settings["default_to_square"] is False:
            raise ValueError("default_to_square=False is not supported: MoleCLIP pictures are always square")
        settings = self._standardize_kwargs(**settings)
        _check_settings(settings)
        return settings

    @classmethod
    def from_dict(cls, image_processor_dict: dict, **kwargs):
        # `from_pretrained(folder, **settings)` ends here with the settings left after the Hub arguments. transformers
        # quietly drops names it does not know, so `from_pretrained(folder, standardise="parent")` would load a
        # processor that does not standardise; refuse them as the constructor does (unless the caller asked for
        # them back with return_unused_kwargs).
        if not kwargs.get("return_unused_kwargs", False):
            given = {k: v for k, v in kwargs.items() if k not in ("cache_size", "return_unused_kwargs")}
            _refuse_unknown(given, "MoleCLIPImageProcessor has no setting")
        return super().from_dict(image_processor_dict, **kwargs)

    def _cache(self) -> CoordinateCache:
        if self._coordinates is None or self._coordinates.max_size != self.cache_size:
            self._coordinates = CoordinateCache(max_size=self.cache_size)
        return self._coordinates

    def drawing_settings(self) -> dict:
        """The settings besides `size` that decide a drawing's pixels (what a store of pictures drawn ahead of time
        records, so that pictures drawn otherwise are never mixed in)."""
        return {"r_groups": bool(self.r_groups), "drawing_backend": str(self.drawing_backend)}

    def with_cache_size(self, cache_size: int) -> "MoleCLIPImageProcessor":
        """A copy with the same settings and an empty coordinate cache of its own, of `cache_size` molecules: what a
        drawing worker takes (one pass over a file never draws a molecule twice, so 1 there; pretraining keeps more)."""
        if isinstance(cache_size, bool) or not isinstance(cache_size, (int, np.integer)) or cache_size < 1:
            raise ValueError(f"cache_size must be a positive integer, got {cache_size!r}")
        twin = copy.copy(self)
        twin.cache_size, twin._coordinates = int(cache_size), None
        return twin

    def __getstate__(self):
        # the coordinate cache stays behind: a worker process builds its own, and pickling it would ship gigabytes
        state = dict(self.__dict__)
        state["_coordinates"] = None
        return state

    def to_dict(self) -> dict:
        # The settings only (preprocessor_config.json); the coordinate cache is rebuilt on load.
        output = super().to_dict()
        return {k: v for k, v in output.items() if not k.startswith("_")}

    # ---------------------------------------------------------------- drawing
    def render_images(
        self,
        molecules,
        randomize_drawing: bool | None = None,
        r_groups: bool | None = None,
        augmentation: str | None = None,
        seed: int | np.random.Generator | None = None,
        on_error: str = "raise",
        **settings,
    ) -> tuple[list[np.ndarray], list[int], list[SkippedMolecule]]:
        """Draw (and augment) a batch: (uint8 HxWxC pictures, kept input positions, skipped entries).

        The pictures are RGB whatever `channel_order` says (the order is applied when they become pixel values, see
        `pictures_to_pixel_values`), so they can be viewed or saved as they are. `settings` override any other
        setting for this call (e.g. `size`, `drawing_backend`).
        """
        s = self._settings(dict(settings, randomize_drawing=randomize_drawing, r_groups=r_groups, augmentation=augmentation))
        return self._draw(molecules, s, seed, on_error)

    def _draw(self, molecules, s: dict, seed, on_error: str):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        if isinstance(molecules, (str, Chem.Mol)) or _is_image(molecules):
            items = [molecules]
        elif isinstance(molecules, (np.ndarray, torch.Tensor)) and molecules.ndim == 4:
            items = list(molecules)  # a batch of images in one array
        elif isinstance(molecules, (list, tuple)):
            items = list(molecules)
        else:
            raise TypeError(f"expected SMILES, RDKit molecules or images (or a list of them), got {type(molecules).__name__}")
        if not items:
            raise ValueError("no molecules given")

        side = s["size"].height
        images, kept, skipped = [], [], []
        cache = self._cache()
        for index, item in enumerate(items):
            try:
                if _is_image(item):
                    image = self._prepare_image(item, s)
                else:
                    mol = cache.get(item, index=index, standardize=s["standardize"])
                    style = random_style(rng) if s["randomize_drawing"] else DrawingStyle()
                    try:
                        image = render(mol, size=side, style=style, r_groups=s["r_groups"], backend=s["drawing_backend"])
                    except DrawingBackendError:
                        raise  # a setting that cannot run here, not a bad molecule: never skipped
                    except (RuntimeError, ValueError) as err:
                        # RDKit's C++ drawing errors arrive as these; anything else is a bug and must not be
                        # turned into a quietly skipped molecule.
                        shown = item if isinstance(item, str) else Chem.MolToSmiles(item)
                        raise InvalidMoleculeError(shown, index, f"could not be drawn ({err})") from err
                if s["augmentation"] != "none" and image.shape[2] != 3:
                    raise ValueError(f"augmentation={s['augmentation']!r} needs 3-channel pictures, got {image.shape[2]} "
                                     "channels (do_convert_rgb=False kept them): use augmentation='none' or do_convert_rgb=True")
                images.append(augment(image, s["augmentation"], rng) if s["augmentation"] != "none" else image)
                kept.append(index)
            except InvalidMoleculeError as err:
                if on_error == "raise":
                    raise
                skipped.append(SkippedMolecule(index, err.smiles, err.reason))
        return images, kept, skipped

    def _prepare_image(self, image, s: dict) -> np.ndarray:
        """A given picture as uint8 HxWxC: to RGB (if do_convert_rgb), resized to `size` (if do_resize)."""
        if isinstance(image, (np.ndarray, torch.Tensor)) and image.dtype not in (np.uint8, torch.uint8):
            raise ValueError(f"image arrays must be uint8 in 0..255, got {image.dtype}; convert floats in [0, 1] with "
                             "(x * 255).round().astype('uint8') first")
        if isinstance(image, Image.Image) and image.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr"):
            raise ValueError(f"PIL images must be 8-bit, got mode {image.mode!r}")
        layout = s["input_data_format"]
        layout = _LAYOUTS[ChannelDimension(layout).value] if layout is not None else None
        if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 2:
            # a greyscale array (as cv2 and scikit-image read one): one channel, where the layout puts channels
            image = image[None] if layout == ChannelDimension.FIRST else image[..., None]
        picture = self.process_image(image, do_convert_rgb=s["do_convert_rgb"], input_data_format=layout)  # C x H x W
        picture = np.ascontiguousarray(np.moveaxis(picture, 0, -1))
        height, width = s["size"].height, s["size"].width
        if s["do_resize"] and picture.shape[:2] != (height, width):
            picture = _resize(picture, height, width, PILImageResampling(s["resample"]))
        return picture

    # ---------------------------------------------------------------- pixel values
    def pictures_to_pixel_values(self, pictures, return_tensors: str | TensorType | None = "pt", **settings):
        """uint8 HxWxC pictures (as `render_images` returns them) -> pixel values the model takes, (N, C, H, W).

        Applies what comes after drawing and augmentation: `channel_order`, then `do_rescale` / `rescale_factor`
        and `do_normalize` / `image_mean` / `image_std`, then `data_format`. Use it wherever pictures are drawn and
        augmented outside the processor (training loops), so they reach the model exactly as through `__call__`.
        """
        s = self._settings(settings)
        return self._pixel_values(list(pictures), s, return_tensors)

    def normalize_pixels(self, pixels: torch.Tensor, **settings) -> torch.Tensor:
        """uint8 pictures as a torch tensor, on any device, -> the model's float32 pixel values on that device: the
        same numbers `pictures_to_pixel_values` gives, for batches that travel as uint8 (4x less traffic from drawing
        workers, normalised on the accelerator).

        `pixels` is (N, H, W, C) (as `render_images` draws them) or, with `input_data_format="channels_first"`,
        (N, C, H, W). Applies `channel_order`, `do_rescale` / `rescale_factor`, `do_normalize` / `image_mean` /
        `image_std`, then `data_format`.
        """
        s = self._settings(settings)
        if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8 or pixels.ndim != 4:
            got = f"{pixels.dtype} {tuple(pixels.shape)}" if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise TypeError(f"normalize_pixels takes a uint8 torch tensor of shape (N, H, W, C), got {got}")
        first = s["input_data_format"] is not None and ChannelDimension(s["input_data_format"]) == ChannelDimension.FIRST
        x = pixels if first else pixels.permute(0, 3, 1, 2)
        factor, shift, swap = self._normalisation(s, x.shape[1])
        if swap:
            x = x.flip(1)
        out = x.to(torch.float32) * torch.from_numpy(factor).to(x.device).view(1, -1, 1, 1)
        out += torch.from_numpy(shift).to(x.device).view(1, -1, 1, 1)
        if s["data_format"] is not None and ChannelDimension(s["data_format"]) == ChannelDimension.LAST:
            out = out.permute(0, 2, 3, 1)
        return out.contiguous()

    @staticmethod
    def _normalisation(s: dict, channels: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """(factor, shift, swap): pixel values are picture[::-1 if swap] * factor + shift per channel, each factor
        rounded once to float32; the one home of the channel swap and the normalisation, for numpy and torch alike."""
        if s["channel_order"] == "bgr" and channels != 3:
            raise ValueError(f"channel_order='bgr' needs 3-channel pictures, got {channels}")
        scale = s["rescale_factor"] if s["do_rescale"] else 1.0
        if s["do_normalize"]:
            mean, std = _per_channel(s["image_mean"], channels, "image_mean"), _per_channel(s["image_std"], channels, "image_std")
        else:
            mean, std = np.zeros(channels), np.ones(channels)
        return (scale / std).astype(np.float32), (-mean / std).astype(np.float32), s["channel_order"] == "bgr"

    def _pixel_values(self, pictures: list[np.ndarray], s: dict, return_tensors):
        if not pictures:
            raise ValueError("no pictures given")
        shape = pictures[0].shape
        for picture in pictures:
            if not isinstance(picture, np.ndarray) or picture.dtype != np.uint8 or picture.ndim != 3:
                got = f"{picture.dtype} {picture.shape}" if isinstance(picture, np.ndarray) else type(picture).__name__
                raise ValueError(f"pictures must be uint8 arrays of shape (H, W, C), got {got}")
            if picture.shape != shape:
                raise ValueError(f"all pictures in a batch must have the same shape, got {shape} and {picture.shape} "
                                 "(do_resize=False keeps given images at their own size)")
        channels = shape[2]
        factor, shift, swap = self._normalisation(s, channels)
        factor, shift = factor.reshape(channels, 1, 1), shift.reshape(channels, 1, 1)
        out = np.empty((len(pictures), channels, shape[0], shape[1]), dtype=np.float32)
        order = slice(None, None, -1) if swap else slice(None)
        # one picture at a time, channels first: the working set stays in cache, several times faster than the batch
        for target, picture in zip(out, pictures):
            np.multiply(np.ascontiguousarray(picture.transpose(2, 0, 1)[order]), factor, out=target)
            target += shift
        if s["data_format"] is not None and ChannelDimension(s["data_format"]) == ChannelDimension.LAST:
            out = np.ascontiguousarray(out.transpose(0, 2, 3, 1))
        return torch.from_numpy(out) if _tensor_type(return_tensors) == TensorType.PYTORCH else out

    # ---------------------------------------------------------------- the processor call
    def __call__(self, images=None, *args, **kwargs) -> BatchFeature:
        return self.preprocess(images, *args, **kwargs)

    def preprocess(
        self,
        images=None,
        smiles=None,
        *,
        return_tensors: str | TensorType | None = "default",
        seed: int | np.random.Generator | None = None,
        on_error: str = "raise",
        **kwargs,
    ) -> BatchFeature:
        """Turn molecules or images into `pixel_values` (batch, C, H, W). See the class docstring."""
        if smiles is not None and images is not None:
            raise ValueError("give the molecules either as `images` (the first argument) or as `smiles`, not both")
        inputs = smiles if smiles is not None else images
        if inputs is None:
            raise ValueError("give SMILES (or RDKit molecules, or images) to process")
        s = self._settings(kwargs)
        if isinstance(return_tensors, str) and return_tensors == "default":  # the processor's own, else torch
            return_tensors = s["return_tensors"] if s["return_tensors"] is not None else "pt"
        tensor_type = _tensor_type(return_tensors)
        if s["device"] is not None and tensor_type != TensorType.PYTORCH:
            raise ValueError("device= only applies to return_tensors='pt'")
        pictures, kept, skipped = self._draw(inputs, s, seed, on_error)
        data: dict = {}
        if pictures:
            data["pixel_values"] = self._pixel_values(pictures, s, None)
        else:
            side = s["size"].height
            last = s["data_format"] is not None and ChannelDimension(s["data_format"]) == ChannelDimension.LAST
            # the layout a full batch would have, so that it stacks with other batches
            data["pixel_values"] = np.zeros((0, side, side, 3) if last else (0, 3, side, side), dtype=np.float32)
        data["kept_indices"] = np.asarray(kept, dtype=np.int64)
        encoding = BatchFeature(data=data, tensor_type=tensor_type)
        if s["device"] is not None:
            encoding = encoding.to(s["device"])
        encoding.skipped = skipped
        if skipped:
            logging.getLogger(__name__).warning(describe_skipped(skipped))
        return encoding

    def to_pil(self, molecule, **kwargs) -> Image.Image:
        """One drawing as a PIL image (what the model sees before channel order and normalisation), e.g. for a PNG."""
        images, _, _ = self.render_images([molecule], **kwargs)
        return Image.fromarray(images[0])


# -------------------------------------------------------------------------------------------------------- helpers
def _refuse_unknown(given: dict, what: str) -> None:
    unknown = sorted(set(given) - set(MoleCLIPImageProcessorKwargs.__annotations__))
    if unknown:
        raise TypeError(f"{what} {', '.join(map(repr, unknown))}; the settings are "
                        f"{', '.join(sorted(MoleCLIPImageProcessorKwargs.__annotations__))} (and cache_size at construction)")


def _check_settings(s: dict) -> None:
    """Refuse what the processor cannot do, naming the setting; everything else it accepts acts."""
    size: SizeDict = s["size"]
    keys = set(dict(size))
    if keys != {"height", "width"}:
        raise ValueError(f"size must be {{'height': n, 'width': n}} (or an int n), got {dict(size)}")
    if size.height != size.width:
        raise ValueError(f"size must be square (molecules are drawn on square canvases), got {dict(size)}")
    if not 16 <= size.height <= MAX_SIZE:
        raise ValueError(f"size must be 16 to {MAX_SIZE} pixels, got {size.height}")
    refused = {
        "do_center_crop": (s["do_center_crop"], "cropping would cut atoms off the drawing; choose `size` instead"),
        "crop_size": (s["crop_size"], "MoleCLIP never crops (it would cut atoms off the drawing); choose `size` instead"),
        "do_pad": (s["do_pad"], "every picture is already `size` x `size`"),
        "pad_size": (s["pad_size"], "every picture is already `size` x `size`"),
        "disable_grouping": (s["disable_grouping"], "it only applies to torchvision-backend processors"),
        "image_seq_length": (s["image_seq_length"], "it only applies to processors of text-and-image models"),
    }
    for name, (value, why) in refused.items():
        if value is not None and value is not False:
            value = dict(value) if isinstance(value, SizeDict) else value
            raise ValueError(f"{name}={value!r} is not supported by MoleCLIPImageProcessor: {why}")
    if s["augmentation"] not in AUGMENTATION_PRESETS:
        raise ValueError(f"unknown augmentation preset {s['augmentation']!r}; choose one of {list(AUGMENTATION_PRESETS)}")
    if s["channel_order"] not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {list(CHANNEL_ORDERS)}, got {s['channel_order']!r}")
    check_backend(s["drawing_backend"])
    if s["standardize"] not in STANDARDIZATIONS:
        raise ValueError(f"standardize must be one of {list(STANDARDIZATIONS)}, got {s['standardize']!r}")
    try:
        PILImageResampling(s["resample"])
    except ValueError:
        raise ValueError(f"resample must be a PIL resampling filter (PILImageResampling), got {s['resample']!r}") from None
    if not s["rescale_factor"] > 0:
        raise ValueError(f"rescale_factor must be positive, got {s['rescale_factor']}")
    if np.any(np.asarray(s["image_std"], dtype=np.float64) <= 0):
        raise ValueError(f"image_std must be positive, got {s['image_std']}")
    for name in ("data_format", "input_data_format"):
        if s[name] is not None and str(getattr(s[name], "value", s[name])) not in _LAYOUTS:
            raise ValueError(f"{name} must be 'channels_first' or 'channels_last', got {s[name]!r}")


def _tensor_type(return_tensors) -> TensorType | None:
    if return_tensors is None:
        return None
    try:
        kind = TensorType(return_tensors)
    except ValueError:
        kind = None
    if kind not in (TensorType.PYTORCH, TensorType.NUMPY):
        raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
    return kind


def _per_channel(values, channels: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 1:
        return np.repeat(array, channels)
    if array.size != channels:
        raise ValueError(f"{name} has {array.size} values for {channels}-channel pictures")
    return array


def _resize(picture: np.ndarray, height: int, width: int, resample: PILImageResampling) -> np.ndarray:
    """uint8 HxWxC to height x width, with PIL; channels other than RGB one at a time (PIL would premultiply alpha)."""
    if picture.shape[2] == 3:
        return np.asarray(Image.fromarray(picture).resize((width, height), resample), dtype=np.uint8)
    planes = [np.asarray(Image.fromarray(picture[:, :, c]).resize((width, height), resample)) for c in range(picture.shape[2])]
    return np.stack(planes, axis=-1).astype(np.uint8)
