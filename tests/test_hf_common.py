"""The `transformers` library's own common tests run on MoleCLIP: `ModelTesterMixin` and `ConfigTester` on the models,
`ImageProcessingTestMixin` on the image processor.

They live in the tests/ folder of the transformers sdist, which is not installed with the library:
`scripts/get_transformers_tests.sh` downloads the sdist of the installed version and prints the folder; set
TRANSFORMERS_TESTS_DIR to it. Without it this module is skipped.

    export TRANSFORMERS_TESTS_DIR=$(scripts/get_transformers_tests.sh)
    pytest tests/test_hf_common.py

Shapes follow CLIP's vision tester (hidden 32, 2 layers, 30 px images in 2 px patches) so the suite runs in a
few minutes on a laptop CPU.
"""

import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_common_support import find_tests_dir, load_common_tests, load_image_processing_tests  # noqa: E402

# Decided before the heavy imports, so that a run without the sdist skips at once.
TESTS_DIR, WHY_NOT = find_tests_dir()
if TESTS_DIR is None:
    pytest.skip(WHY_NOT, allow_module_level=True)

common = load_common_tests(TESTS_DIR)  # first: it explains a missing test dependency
image_processing_common = load_image_processing_tests(TESTS_DIR)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from parameterized import parameterized  # noqa: E402
from transformers.exporters import DynamoConfig, DynamoExporter  # noqa: E402

from moleclip import MoleCLIPConfig, MoleCLIPForPropertyPrediction, MoleCLIPImageProcessor, MoleCLIPModel  # noqa: E402
from moleclip.processing.augment import CLIP_MEAN, CLIP_STD  # noqa: E402

ModelTesterMixin = common.modeling.ModelTesterMixin
ConfigTester = common.configuration.ConfigTester
ImageProcessingTestMixin = image_processing_common.ImageProcessingTestMixin
ImageProcessingTester = image_processing_common.ImageProcessingTester
floats_tensor = common.modeling.floats_tensor


class MoleCLIPModelTester:
    """Tiny configs and inputs for both MoleCLIP classes, in the shape the common tests expect of a tester."""

    def __init__(
        self,
        parent,
        batch_size=3,
        image_size=30,
        patch_size=2,
        num_channels=3,
        is_training=True,
        hidden_size=32,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        dropout=0.1,
        attention_dropout=0.1,
        initializer_range=0.02,
        pseudo_label_classes=(5, 7),
        num_targets=2,
        head_hidden_size=16,
        head_num_layers=2,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.is_training = is_training
        self.hidden_size = hidden_size
        self.projection_dim = projection_dim
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.pseudo_label_classes = list(pseudo_label_classes)
        self.num_targets = num_targets
        self.head_hidden_size = head_hidden_size
        self.head_num_layers = head_num_layers
        # ViT: one token per patch plus the class token.
        self.seq_length = (image_size // patch_size) ** 2 + 1

    def get_config(self) -> MoleCLIPConfig:
        return MoleCLIPConfig(
            vision_config=dict(
                image_size=self.image_size,
                patch_size=self.patch_size,
                num_channels=self.num_channels,
                hidden_size=self.hidden_size,
                projection_dim=self.projection_dim,
                num_hidden_layers=self.num_hidden_layers,
                num_attention_heads=self.num_attention_heads,
                intermediate_size=self.intermediate_size,
                dropout=self.dropout,
                attention_dropout=self.attention_dropout,
                initializer_range=self.initializer_range,
            ),
            projection_dim=self.projection_dim,
            pseudo_label_classes=self.pseudo_label_classes,
            num_targets=self.num_targets,
            head_hidden_size=self.head_hidden_size,
            head_num_layers=self.head_num_layers,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), pixel_values

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}

    def training_labels(self, model_class) -> dict:
        """What each class needs besides images to return a loss: a second view and pseudo-labels for the
        pretraining model, property labels for the finetuning one.

        Seeded, because the common tests build the inputs twice and compare the two runs (tuple vs dict outputs).
        """
        generator = torch.Generator().manual_seed(0)
        if model_class is MoleCLIPModel:
            pseudo = torch.stack(
                [torch.randint(k, (self.batch_size,), generator=generator) for k in self.pseudo_label_classes], dim=1
            )
            augmented = torch.rand(
                self.batch_size, self.num_channels, self.image_size, self.image_size, generator=generator
            )
            return {"augmented_pixel_values": augmented, "pseudo_labels": pseudo}
        return {"labels": torch.randn(self.batch_size, self.num_targets, generator=generator)}


class MoleCLIPCommonTests(ModelTesterMixin):
    """Shared settings of the two test classes below."""

    # The input is pixels; there is no token embedding matrix to resize (as CLIP's vision tests).
    test_resize_embeddings = False
    # The config holds a CLIP vision sub-config, and attention implementations are dispatched to it.
    _is_composite = True
    # test_can_init_all_missing_weights only runs for models whose config file starts with "# Copyright <year>" of
    # 2023 or later, which ours does not carry; MoleCLIP is new, so opt in.
    test_can_init_all_missing_weights_before_2023 = True

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:
            device = inputs_dict["pixel_values"].device
            inputs_dict.update({k: v.to(device) for k, v in self.model_tester.training_labels(model_class).items()})
        return inputs_dict

    @unittest.skip(reason="MoleCLIP reads images; it has no inputs_embeds (as CLIP's vision tests)")
    def test_inputs_embeds(self):
        pass

    @parameterized.expand([("static", False), ("dynamic", True)])
    def test_dynamo_export_matches_eager(self, _name, dynamic):
        # Stands in for the sdist's missing ExportTesterMixin (see hf_common_support): the library's own Dynamo
        # exporter must trace each class, and the exported program must reproduce eager outputs, on a second batch
        # size too when the batch axis is dynamic.
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            inputs = self._prepare_for_class(inputs_dict, model_class)
            exported = DynamoExporter().export(model, inputs, config=DynamoConfig(dynamic=dynamic))
            batches = [inputs]
            if dynamic:
                bigger = self.model_tester.batch_size + 2
                batches.append({"pixel_values": floats_tensor([bigger, *inputs["pixel_values"].shape[1:]])})
            for batch in batches:
                with torch.no_grad():
                    expected = model(**batch)
                actual = exported(**batch)
                compared = [key for key, value in expected.items() if value is not None]
                self.assertIn("image_embeds", compared)
                for key in compared:
                    torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)

    def test_model_get_set_embeddings(self):
        # The common test expects a token `nn.Embedding`; a ViT's input embedding is its patch convolution (CLIP's
        # vision tests override this test the same way). Getting and setting it must still round-trip.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            embeddings = model.get_input_embeddings()
            self.assertIsInstance(embeddings, torch.nn.Conv2d)
            self.assertEqual(embeddings.out_channels, self.model_tester.hidden_size)
            replacement = torch.nn.Conv2d(3, self.model_tester.hidden_size, 2, stride=2, bias=False)
            model.set_input_embeddings(replacement)
            self.assertIs(model.get_input_embeddings(), replacement)
            self.assertIsNone(model.get_output_embeddings())


class MoleCLIPModelTest(MoleCLIPCommonTests, unittest.TestCase):
    all_model_classes = (MoleCLIPModel,)

    def setUp(self):
        self.model_tester = MoleCLIPModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=MoleCLIPConfig,
            has_text_modality=False,
            common_properties=["projection_dim", "logit_scale_init_value"],
            projection_dim=24,
        )

    def test_config(self):
        self.config_tester.run_common_tests()


class MoleCLIPForPropertyPredictionTest(MoleCLIPCommonTests, unittest.TestCase):
    all_model_classes = (MoleCLIPForPropertyPrediction,)

    def setUp(self):
        self.model_tester = MoleCLIPModelTester(self)


# ------------------------------------------------------------------------------------------------ image processor
class MoleCLIPImageProcessingTester(ImageProcessingTester):
    """Settings and random inputs for `ImageProcessingTestMixin`, as transformers' CLIP processor tester sets them.

    The settings are the ones the processor would save; pictures are 20 x 20 so the suite runs in seconds. The
    mixin's inputs are photos-like arrays (PIL, numpy, torch, 30..400 px): MoleCLIP resizes, augments and normalises
    given pictures exactly like its drawings.
    """

    def __init__(self, parent, **kwargs):
        kwargs.setdefault("size", {"height": 20, "width": 20})
        kwargs.setdefault("do_resize", True)
        kwargs.setdefault("do_rescale", True)
        kwargs.setdefault("do_normalize", True)
        kwargs.setdefault("image_mean", list(CLIP_MEAN))
        kwargs.setdefault("image_std", list(CLIP_STD))
        kwargs.setdefault("do_convert_rgb", True)
        kwargs.setdefault("augmentation", "none")
        kwargs.setdefault("randomize_drawing", False)
        kwargs.setdefault("r_groups", False)
        kwargs.setdefault("channel_order", "rgb")
        kwargs.setdefault("drawing_backend", "hybrid")
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        # The mixin finds classes by the test file's folder name in transformers' own registry; MoleCLIP is not in
        # it (its processor registers at import and travels as remote code). PilBackend is its one backend.
        return {"pil": MoleCLIPImageProcessor}


class MoleCLIPImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = MoleCLIPImageProcessingTester
    test_cast_dtype = True  # run test_cast_dtype_device (the mixin leaves it off by default)

    @unittest.skip(
        reason="a policy for models added to the transformers repository (new ones must ship a torchvision backend); "
        "MoleCLIP is a separate package whose processor draws with RDKit and uses transformers' PIL backend, "
        "without torchvision"
    )
    def test_new_models_require_torchvision_backend(self):
        pass

    def test_image_processor_preprocess_arguments(self):
        # The mixin checks argument validation through `_valid_processor_keys` or a decorator that warns about extra
        # arguments; MoleCLIP refuses them instead. Every setting in `valid_kwargs` is accepted per call (it acts, or
        # is refused with a ValueError naming it when it cannot: crop, pad...), and anything else is a TypeError.
        processor = MoleCLIPImageProcessor(**self.image_processor_dict)
        inputs = self.image_processor_tester.prepare_image_inputs()
        for name in MoleCLIPImageProcessor.valid_kwargs.__annotations__:
            value = getattr(processor, name, None)
            processor(inputs, **({name: value} if value is not None else {}))
        with self.assertRaisesRegex(TypeError, "extra_argument"):
            processor(inputs, extra_argument=True)
        for name, value in (("do_center_crop", True), ("crop_size", 10), ("do_pad", True), ("pad_size", 30)):
            with self.assertRaisesRegex(ValueError, name):
                processor(inputs, **{name: value})

    def test_pil_can_run_without_torchvision(self):
        # The mixin's version (slow) loads the saved processor in a fresh process with torchvision blocked, through
        # transformers' registry; MoleCLIP's processor is not in it and arrives as remote code, so load it that way.
        processor = MoleCLIPImageProcessor(**self.image_processor_dict)
        inputs = self.image_processor_tester.prepare_processor_inputs(equal_resolution=False)
        expected = processor(**inputs, return_tensors=None)
        script = textwrap.dedent(
            """
            import pickle, sys
            sys.modules["torchvision"] = None  # raises ImportError on `import torchvision`
            from transformers import AutoImageProcessor
            folder, inputs_path, outputs_path = sys.argv[1:]
            processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
            assert type(processor).__name__ == "MoleCLIPImageProcessor" and processor.backend == "pil"
            with open(inputs_path, "rb") as f:
                inputs = pickle.load(f)
            with open(outputs_path, "wb") as f:
                pickle.dump(dict(processor(**inputs, return_tensors=None).data), f)
            """
        )
        with tempfile.TemporaryDirectory() as folder:
            processor.save_pretrained(folder)
            inputs_path, outputs_path = os.path.join(folder, "inputs.pkl"), os.path.join(folder, "outputs.pkl")
            with open(inputs_path, "wb") as f:
                pickle.dump(inputs, f)
            env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPATH")}
            env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=os.path.join(folder, "modules"))
            result = subprocess.run([sys.executable, "-c", script, folder, inputs_path, outputs_path],
                                    capture_output=True, text=True, env=env, cwd=folder, timeout=300)
            self.assertEqual(result.returncode, 0, result.stderr[-3000:])
            with open(outputs_path, "rb") as f:
                outputs = pickle.load(f)
        np.testing.assert_equal(outputs, dict(expected.data))

    def test_override_instance_attributes_does_not_affect_other_instances(self):
        # The mixin runs this only for `size` dicts and `image_mean` lists; transformers v5 stores them as a SizeDict
        # and a tuple, so it skips. The same guarantee, checked on those types.
        first, second = MoleCLIPImageProcessor(), MoleCLIPImageProcessor()
        self.assertIsNot(first.size, second.size)
        first.size["height"] = -1
        self.assertEqual(second.size, {"height": 224, "width": 224})
        self.assertEqual(MoleCLIPImageProcessor().size, {"height": 224, "width": 224})
        self.assertEqual(MoleCLIPImageProcessor.size, {"height": 224, "width": 224})
        self.assertIsInstance(second.image_mean, tuple)  # immutable: nothing to share
