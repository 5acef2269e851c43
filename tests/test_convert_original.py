"""The converter from the paper's OpenAI-layout `.pth` must reproduce OpenAI's vision transformer exactly.

The reference below is an independent re-implementation of OpenAI CLIP's `VisionTransformer.forward` written from
its published structure (fused in_proj attention, QuickGELU MLP, pre-LN blocks, `ln_post` on the class token, `@ proj`),
applied to the very tensors we save in the synthetic checkpoint.
"""

import json
import pickle

import pytest
import torch
import torch.nn.functional as F

from moleclip.convert_original import convert_original_checkpoint, find_visual_prefix

PREFIX = "model_image.module.model.visual."
WIDTH, LAYERS, PATCH, GRID, PROJ, MLP = 128, 2, 16, 3, 24, 256  # 128 wide -> 2 heads of 64, as OpenAI does


def synthetic_visual_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    state = {
        "conv1.weight": r(WIDTH, 3, PATCH, PATCH),
        "class_embedding": r(WIDTH),
        "positional_embedding": r(GRID * GRID + 1, WIDTH),
        "ln_pre.weight": 1 + r(WIDTH),
        "ln_pre.bias": r(WIDTH),
        "ln_post.weight": 1 + r(WIDTH),
        "ln_post.bias": r(WIDTH),
        "proj": r(WIDTH, PROJ),
    }
    for i in range(LAYERS):
        b = f"transformer.resblocks.{i}."
        state.update(
            {
                b + "attn.in_proj_weight": r(3 * WIDTH, WIDTH),
                b + "attn.in_proj_bias": r(3 * WIDTH),
                b + "attn.out_proj.weight": r(WIDTH, WIDTH),
                b + "attn.out_proj.bias": r(WIDTH),
                b + "ln_1.weight": 1 + r(WIDTH),
                b + "ln_1.bias": r(WIDTH),
                b + "mlp.c_fc.weight": r(MLP, WIDTH),
                b + "mlp.c_fc.bias": r(MLP),
                b + "mlp.c_proj.weight": r(WIDTH, MLP),
                b + "mlp.c_proj.bias": r(WIDTH),
                b + "ln_2.weight": 1 + r(WIDTH),
                b + "ln_2.bias": r(WIDTH),
            }
        )
    return state


def openai_reference(v: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    heads = WIDTH // 64
    x = F.conv2d(images, v["conv1.weight"], stride=PATCH)  # (B, W, g, g)
    x = x.flatten(2).transpose(1, 2)  # (B, g*g, W)
    cls = v["class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + v["positional_embedding"]
    x = F.layer_norm(x, (WIDTH,), v["ln_pre.weight"], v["ln_pre.bias"])
    x = x.transpose(0, 1)  # OpenAI runs the transformer sequence-first
    for i in range(LAYERS):
        b = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (WIDTH,), v[b + "ln_1.weight"], v[b + "ln_1.bias"])
        attn, _ = F.multi_head_attention_forward(
            h, h, h, WIDTH, heads, v[b + "attn.in_proj_weight"], v[b + "attn.in_proj_bias"], None, None, False, 0.0,
            v[b + "attn.out_proj.weight"], v[b + "attn.out_proj.bias"], need_weights=False,
        )
        x = x + attn
        h = F.layer_norm(x, (WIDTH,), v[b + "ln_2.weight"], v[b + "ln_2.bias"])
        h = F.linear(h, v[b + "mlp.c_fc.weight"], v[b + "mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        x = x + F.linear(h, v[b + "mlp.c_proj.weight"], v[b + "mlp.c_proj.bias"])
    x = x.transpose(0, 1)
    pooled = F.layer_norm(x[:, 0], (WIDTH,), v["ln_post.weight"], v["ln_post.bias"])
    return pooled @ v["proj"]


@pytest.fixture()
def released_file(tmp_path):
    visual = synthetic_visual_state()
    full = {PREFIX + k: t for k, t in visual.items()}
    full["model_text.module.token_embedding.weight"] = torch.zeros(4, 8)  # other towers are ignored
    path = tmp_path / "MoleCLIP - Primary.pth"
    torch.save({"model": full, "epoch": 4}, path)
    return path, visual


def test_converted_model_equals_openai_reference(released_file):
    path, visual = released_file
    model = convert_original_checkpoint(path)
    assert model.config.vision_config.num_hidden_layers == LAYERS
    assert model.config.vision_config.patch_size == PATCH
    assert model.config.projection_dim == PROJ
    images = torch.randn(3, 3, GRID * PATCH, GRID * PATCH, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(pixel_values=images).image_embeds
    reference = openai_reference(visual, images)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


def test_converted_checkpoint_saves_and_reloads(released_file, tmp_path):
    from moleclip import MoleCLIPModel

    path, visual = released_file
    model = convert_original_checkpoint(path, pseudo_label_classes=[])
    model.save_pretrained(tmp_path / "hf")
    again = MoleCLIPModel.from_pretrained(tmp_path / "hf")
    images = torch.randn(2, 3, GRID * PATCH, GRID * PATCH)
    with torch.no_grad():
        torch.testing.assert_close(again(pixel_values=images).image_embeds, openai_reference(visual, images), rtol=1e-4, atol=1e-5)


def test_prefix_is_found_and_missing_tower_is_explained():
    assert find_visual_prefix({PREFIX + "conv1.weight": torch.zeros(1)}) == PREFIX
    with pytest.raises(ValueError, match="no OpenAI-format vision tower"):
        find_visual_prefix({"foo.weight": torch.zeros(1)})


def test_a_tower_stored_twice_is_one_tower_and_different_towers_are_refused():
    tower = {"conv1.weight": torch.ones(2), "proj": torch.arange(3.0)}
    # the reference model's checkpoints can hold its CLIP under `clip_model.` as well as under `model_image.`
    twice = {**{PREFIX + k: v for k, v in tower.items()}, **{"clip_model.visual." + k: v.clone() for k, v in tower.items()}}
    assert find_visual_prefix(twice) == PREFIX
    twice["clip_model.visual.proj"] = torch.arange(3.0) + 1
    with pytest.raises(ValueError, match="several different vision towers"):
        find_visual_prefix(twice)


def test_pickled_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"model": Payload()}, fh)
    with pytest.raises(ValueError, match="weights_only"):
        convert_original_checkpoint(path)


# ------------------------------------------------------------------------------------ the processor the weights need
def test_convert_original_command_saves_a_bgr_processor(released_file, tmp_path):
    from moleclip import MoleCLIPImageProcessor
    from moleclip_cli.main import main

    path, _ = released_file
    out = tmp_path / "converted"
    assert main(["convert-original", "--input", str(path), "--output-dir", str(out), "--pseudo-label-classes"]) == 0
    saved = json.loads((out / "preprocessor_config.json").read_text())
    assert saved["channel_order"] == "bgr" and saved["drawing_backend"] == "hybrid"
    # CLIP's R, G, B statistics, applied to the B, G, R channels in that order, as the reference did.
    assert saved["image_mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    processor = MoleCLIPImageProcessor.from_pretrained(out)
    assert processor.channel_order == "bgr"


def test_processors_for_each_kind_of_backbone(released_file, tmp_path):
    from moleclip.convert_original import ORIGINAL_PROCESSOR_SETTINGS, original_processor
    from moleclip.training.serving.hub import load_processor

    path, _ = released_file
    assert ORIGINAL_PROCESSOR_SETTINGS == {"channel_order": "bgr"}
    assert original_processor().channel_order == "bgr"
    assert original_processor(size=96).size == {"height": 96, "width": 96}
    assert load_processor(str(path)).channel_order == "bgr"  # what `moleclip init --backbone x.pth` saves
    assert load_processor(str(path), size=96).size == {"height": 96, "width": 96}
    assert load_processor("tiny").channel_order == "rgb"  # presets and CLIP checkpoints (from_clip) stay RGB
    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    (clip_dir / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    assert load_processor(str(clip_dir)).channel_order == "rgb"
