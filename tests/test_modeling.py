"""MoleCLIP models on tiny random configs: outputs, losses, save/load round trips, CLIP starting points."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, CLIPConfig, CLIPModel, CLIPVisionConfig

from moleclip import MODEL_PRESETS, MoleCLIPConfig, MoleCLIPForPropertyPrediction, MoleCLIPModel, TargetScaling
from moleclip.modeling_moleclip import PropertyHead, contrastive_loss, loss_from_predictions, property_loss
from moleclip.tasks import TASK_TYPES, get_task, infer_task

TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                   patch_size=16, projection_dim=16)


def tiny_config(**overrides) -> MoleCLIPConfig:
    return MoleCLIPConfig(vision_config=TINY_VISION, projection_dim=16, head_hidden_size=8,
                          **{"pseudo_label_classes": [3, 5], **overrides})


def images(n=4, seed=0):
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_embedding_is_projected_pooled_output():
    torch.manual_seed(0)
    model = MoleCLIPModel(tiny_config()).eval()
    out = model(pixel_values=images())
    assert out.image_embeds.shape == (4, 16) and out.vision_pooler_output.shape == (4, 32)
    assert "pooler_output" not in out  # one name, one tensor: the projected one is `image_embeds`
    torch.testing.assert_close(out.image_embeds, model.visual_projection(out.vision_pooler_output))
    # as transformers 5's CLIPModel: get_image_features(...).pooler_output is the projected embedding
    features = model.get_image_features(images())
    torch.testing.assert_close(features.pooler_output, out.image_embeds)
    torch.testing.assert_close(features.last_hidden_state, out.last_hidden_state)
    assert out.loss is None and out.contrastive_loss is None


def test_pretraining_loss_is_contrastive_plus_one_ce_per_k():
    torch.manual_seed(0)
    model = MoleCLIPModel(tiny_config()).eval()
    x1, x2 = images(seed=1), images(seed=2)
    labels = torch.tensor([[0, 1], [1, 4], [2, 0], [0, 3]])
    out = model(pixel_values=x1, augmented_pixel_values=x2, pseudo_labels=labels)
    e1, e2 = F.normalize(out.image_embeds, dim=-1), F.normalize(out.augmented_image_embeds, dim=-1)
    logits = 15.0 * e1 @ e2.t()
    target = torch.arange(4)
    expected_contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    torch.testing.assert_close(out.contrastive_loss, expected_contrastive)
    expected_ce = torch.stack([F.cross_entropy(out.label_logits[i], labels[:, i]) for i in range(2)])
    torch.testing.assert_close(out.classification_losses, expected_ce)
    torch.testing.assert_close(out.loss, expected_contrastive + expected_ce.sum())
    assert [t.shape[1] for t in out.label_logits] == [3, 5]


def test_molecules_without_a_pseudo_label_are_ignored_and_a_batch_of_them_is_not_nan():
    torch.manual_seed(0)
    model = MoleCLIPModel(tiny_config())
    x1, x2 = images(seed=1), images(seed=2)
    mixed = torch.tensor([[0, -100], [1, 4], [-100, -100], [2, 3]])  # -100: a molecule that could not be drawn
    out = model(pixel_values=x1, augmented_pixel_values=x2, pseudo_labels=mixed)
    expected = torch.stack([F.cross_entropy(out.label_logits[i][mixed[:, i] >= 0], mixed[mixed[:, i] >= 0, i])
                            for i in range(2)])
    torch.testing.assert_close(out.classification_losses, expected)
    none = model(pixel_values=x1, augmented_pixel_values=x2, pseudo_labels=torch.full((4, 2), -100))
    assert torch.equal(none.classification_losses, torch.zeros(2))
    none.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_logit_scale_fixed_by_default_and_learnable_on_request():
    fixed = MoleCLIPModel(tiny_config())
    assert math.isclose(fixed.logit_scale.exp().item(), 15.0, rel_tol=1e-6) and not fixed.logit_scale.requires_grad
    learnable = MoleCLIPModel(tiny_config(learnable_logit_scale=True, logit_scale_init_value=20.0))
    assert learnable.logit_scale.requires_grad and math.isclose(learnable.logit_scale.exp().item(), 20.0, rel_tol=1e-6)


def test_contrastive_loss_is_low_for_matching_views():
    a = torch.eye(8)
    low, _ = contrastive_loss(a, a, 15.0)
    high, _ = contrastive_loss(a, a.roll(1, dims=0), 15.0)
    assert low < 0.01 < 5.0 < high


def test_wrong_pseudo_label_count_is_explained():
    model = MoleCLIPModel(tiny_config())
    with pytest.raises(ValueError, match="1 label sets, the model has 2 heads"):
        model(pixel_values=images(), pseudo_labels=torch.zeros(4, 1, dtype=torch.long))


@pytest.mark.parametrize("task", sorted(TASK_TYPES))
def test_property_loss_ignores_missing_labels(task):
    predictions = torch.tensor([[0.5, -1.0], [2.0, 0.3], [0.1, 0.9]], requires_grad=True)
    labels = torch.tensor([[1.0, float("nan")], [float("nan"), 0.0], [0.0, 1.0]])
    loss = property_loss(predictions, labels, task)
    observed = ~torch.isnan(labels)
    if task == "regression":
        expected = (predictions[observed] - labels[observed]).abs().mean()
    else:
        expected = F.binary_cross_entropy_with_logits(predictions[observed], labels[observed])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.all(predictions.grad[~observed] == 0)
    all_missing = property_loss(predictions, torch.full_like(labels, float("nan")), task)
    assert all_missing.item() == 0.0 and all_missing.requires_grad


def test_mse_regression_loss_and_unknown_tasks():
    predictions = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, 0.0]])
    torch.testing.assert_close(property_loss(predictions, labels, "regression", "mse"), torch.tensor(5.0 / 3))
    with pytest.raises(ValueError, match="task must be one of"):
        property_loss(predictions, labels, "multiclass")
    with pytest.raises(ValueError, match="one of"):
        property_loss(predictions, labels, "regression", "huber")


def test_task_types_are_the_one_list():
    assert set(TASK_TYPES) == {"regression", "classification"}
    assert get_task("regression").default_metric == "mae" and get_task("regression").default_loss == "l1"
    assert get_task("classification").metrics == ("roc_auc",)
    assert infer_task(np.array([[0.0, np.nan], [1.0, 1.0]])) == "classification"
    assert infer_task(np.array([0.0, 0.5])) == "regression" and infer_task(np.array([np.nan])) == "regression"


def test_target_scaling_from_labels():
    labels = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan], [np.nan, 5.0, np.nan]])
    scaling = TargetScaling.from_labels(labels)
    mean, std = scaling.statistics()
    assert mean == pytest.approx([2.0, 5.0, 0.0]) and std == pytest.approx([1.0, 1.0, 1.0])  # ddof 0; std 0 -> 1
    np.testing.assert_allclose(scaling.standardize(labels)[:2, 0], [-1.0, 1.0])
    assert np.isnan(scaling.standardize(labels)[2, 0])
    values = torch.randn(4, 3, dtype=torch.float64)
    back = scaling.unstandardize(scaling.standardize(values))
    assert back.dtype == torch.float64
    torch.testing.assert_close(back, values)
    one = TargetScaling.from_labels(np.array([2.0, 4.0]))
    assert one.statistics() == ([3.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        TargetScaling([0.0], [-1.0])
    with pytest.raises(ValueError, match="2 values for 1 targets"):
        TargetScaling([0.0], [1.0, 2.0])


def test_loss_from_predictions_is_the_training_loss():
    torch.manual_seed(0)
    labels = torch.tensor([[10.0, -5.0], [12.0, -4.5], [8.0, float("nan")], [11.0, -6.0]])
    for task, regression_loss in (("regression", "l1"), ("regression", "mse"), ("classification", "l1")):
        model = MoleCLIPForPropertyPrediction(tiny_config(num_targets=2, task=task, regression_loss=regression_loss))
        y = labels if task == "regression" else (labels > 9).float().where(~labels.isnan(), labels)
        scaling = TargetScaling.from_labels(y) if task == "regression" else None
        if scaling is not None:
            model.set_target_scaling(scaling)
        out = model.eval()(image_embeds=torch.randn(4, 16), labels=y)
        got = loss_from_predictions(out.logits.detach().numpy(), y.numpy(), task, regression_loss, scaling)
        assert got == pytest.approx(out.loss.item(), rel=1e-5), (task, regression_loss)
    with pytest.raises(ValueError, match="TargetScaling"):
        loss_from_predictions(np.zeros(3), np.zeros(3), "regression")


def test_head_defaults_are_the_papers():
    config = tiny_config(num_targets=3)
    assert config.head_dropout == 0.0
    model = MoleCLIPForPropertyPrediction(config)
    assert all(m.p == 0.0 for m in model.head.modules() if isinstance(m, torch.nn.Dropout))
    # PyTorch's nn.Linear init: weights and biases uniform in +-1/sqrt(fan_in) (Kaiming-uniform with a=sqrt(5))
    def check_default_init(head):
        linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
        assert len(linears) == config.head_num_layers + 1
        for layer in linears:
            bound = layer.in_features**-0.5
            assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
            assert layer.bias.abs().max() > 0  # not the zero bias of the normal(std=fan_in**-0.5) scheme
        scaled = torch.cat([(m.weight * m.in_features**0.5).detach().reshape(-1) for m in linears])
        assert scaled.std().item() == pytest.approx(1 / math.sqrt(3), rel=0.2)  # uniform(-1, 1), not normal(0, 1)

    check_default_init(model.head)
    torch.manual_seed(1)
    old = model.head
    config.head_dropout = 0.25
    new = model.reset_head()
    assert model.head is new and new is not old
    assert [m.p for m in new.modules() if isinstance(m, torch.nn.Dropout)] == [0.25] * config.head_num_layers
    check_default_init(new)
    torch.manual_seed(1)
    again = PropertyHead.from_config(config)
    for a, b in zip(new.parameters(), again.parameters()):
        torch.testing.assert_close(a, b)  # the global RNG decides, so a seeded run is reproducible


def test_head_init_from_an_encoder_checkpoint_is_pytorch_default(tmp_path):
    MoleCLIPModel(tiny_config()).save_pretrained(tmp_path)
    predictor = MoleCLIPForPropertyPrediction.from_pretrained(tmp_path, num_targets=2)
    for layer in (m for m in predictor.head.modules() if isinstance(m, torch.nn.Linear)):
        bound = layer.in_features**-0.5
        assert layer.weight.abs().max() <= bound and 0 < layer.bias.abs().max() <= bound


def test_target_scaling_only_for_regression():
    model = MoleCLIPForPropertyPrediction(tiny_config(task="classification"))
    with pytest.raises(ValueError, match="no target scaling"):
        model.set_target_scaling([0.0], [1.0])


def test_regression_head_predicts_in_target_units():
    torch.manual_seed(0)
    model = MoleCLIPForPropertyPrediction(tiny_config(num_targets=2, target_mean=[10.0, -5.0], target_std=[2.0, 0.5])).eval()
    embeds = torch.randn(3, 16)
    out = model(image_embeds=embeds, labels=torch.tensor([[10.0, -5.0], [12.0, -4.5], [8.0, float("nan")]]))
    raw = model.head(embeds)
    torch.testing.assert_close(out.logits, raw * torch.tensor([2.0, 0.5]) + torch.tensor([10.0, -5.0]))
    standardised = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, float("nan")]])
    torch.testing.assert_close(out.loss, property_loss(raw, standardised, "regression"))


def test_base_round_trip_and_auto_classes(tmp_path):
    torch.manual_seed(0)
    model = MoleCLIPModel(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    for loader in (MoleCLIPModel, AutoModel):
        again = loader.from_pretrained(tmp_path).eval()
        assert type(again) is MoleCLIPModel
        x1, x2 = images(seed=1), images(seed=2)
        labels = torch.tensor([[0, 1], [1, 4], [2, 0], [0, 3]])
        a = model(pixel_values=x1, augmented_pixel_values=x2, pseudo_labels=labels)
        b = again(pixel_values=x1, augmented_pixel_values=x2, pseudo_labels=labels)
        torch.testing.assert_close(a.loss, b.loss)
        torch.testing.assert_close(a.image_embeds, b.image_embeds)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, MoleCLIPConfig) and config.pseudo_label_classes == [3, 5]


def test_property_model_from_encoder_checkpoint_and_back(tmp_path):
    torch.manual_seed(0)
    encoder = MoleCLIPModel(tiny_config()).eval()
    encoder.save_pretrained(tmp_path / "encoder")
    config = MoleCLIPConfig.from_pretrained(tmp_path / "encoder", num_targets=3, task="classification")
    predictor, info = AutoModelForImageClassification.from_pretrained(tmp_path / "encoder", config=config, output_loading_info=True)
    assert type(predictor) is MoleCLIPForPropertyPrediction
    assert info["missing_keys"] and all(k.startswith("head.") for k in info["missing_keys"])
    predictor.eval()
    torch.testing.assert_close(predictor(pixel_values=images()).image_embeds, encoder(pixel_values=images()).image_embeds)
    assert predictor(pixel_values=images()).logits.shape == (4, 3)

    predictor.save_pretrained(tmp_path / "predictor")
    reloaded = MoleCLIPForPropertyPrediction.from_pretrained(tmp_path / "predictor").eval()
    torch.testing.assert_close(reloaded(pixel_values=images()).logits, predictor(pixel_values=images()).logits)
    back = MoleCLIPModel.from_pretrained(tmp_path / "predictor").eval()
    torch.testing.assert_close(back(pixel_values=images()).image_embeds, encoder(pixel_values=images()).image_embeds)


def test_regression_scaling_survives_save_and_load(tmp_path):
    model = MoleCLIPForPropertyPrediction(tiny_config()).eval()
    model.set_target_scaling([3.0], [0.25])
    assert model.config.target_mean == [3.0] and model.config.target_std == [0.25]
    model.save_pretrained(tmp_path)
    assert not any("target" in key for key in model.state_dict())  # the config carries the scaling
    again = MoleCLIPForPropertyPrediction.from_pretrained(tmp_path).eval()
    assert again.target_mean.tolist() == [3.0] and again.target_std.tolist() == [0.25]
    assert again.target_scaling.statistics() == ([3.0], [0.25])
    torch.testing.assert_close(again(pixel_values=images()).logits, model(pixel_values=images()).logits)


def _tiny_clip_vision():
    return CLIPVisionConfig(**TINY_VISION)


@pytest.mark.parametrize("kind", ["full", "vision_with_projection"])
def test_from_clip_keeps_tower_and_projection(tmp_path, kind):
    from transformers import CLIPTextConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    if kind == "full":
        text = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              vocab_size=99, max_position_embeddings=16, projection_dim=16)
        clip = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=_tiny_clip_vision().to_dict(), projection_dim=16)).eval()
        # transformers 5 returns the projected embedding as `pooler_output` of get_image_features
        reference = lambda x: clip.get_image_features(pixel_values=x).pooler_output  # noqa: E731
    else:
        clip = CLIPVisionModelWithProjection(_tiny_clip_vision()).eval()
        reference = lambda x: clip(pixel_values=x).image_embeds  # noqa: E731
    clip.save_pretrained(tmp_path)
    model = MoleCLIPModel.from_clip(str(tmp_path), pseudo_label_classes=[4]).eval()
    assert model.config.pseudo_label_classes == [4]
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=images()).image_embeds, reference(images()))
    predictor = MoleCLIPForPropertyPrediction.from_clip(str(tmp_path), num_targets=2).eval()
    with torch.no_grad():
        torch.testing.assert_close(predictor(pixel_values=images()).image_embeds, reference(images()))


def test_from_clip_refuses_a_tower_without_projection(tmp_path):
    from transformers import CLIPVisionModel

    CLIPVisionModel(_tiny_clip_vision()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no trained visual projection"):
        MoleCLIPModel.from_clip(str(tmp_path))


@pytest.mark.parametrize("bad", [dict(task="ranking"), dict(num_targets=0), dict(task="multiclass", num_targets=3),
                                 dict(pseudo_label_classes=[1]), dict(target_std=[0.0])])
def test_invalid_config_is_refused(bad):
    with pytest.raises(ValueError):
        tiny_config(**bad)


def test_model_presets():
    assert set(MODEL_PRESETS) == {"tiny", "base"}
    tiny = MoleCLIPConfig.from_preset("tiny")
    base = MoleCLIPConfig.from_preset("base")
    assert tiny.vision_config.num_hidden_layers == 2 and base.vision_config.patch_size == 16
    assert base.vision_config.hidden_size == 768 and base.projection_dim == 512
    with pytest.raises(ValueError, match="unknown preset"):
        MoleCLIPConfig.from_preset("huge")


_GATHER_SCRIPT = '''
import json, os, sys
import torch
import torch.distributed as dist
from moleclip.modeling_moleclip import contrastive_loss

def work(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    view1, view2 = torch.randn(8, 5), torch.randn(8, 5)  # the global batch; this process owns rows 4r..4r+3
    mine1 = view1[4 * rank:4 * rank + 4].clone().requires_grad_()
    mine2 = view2[4 * rank:4 * rank + 4].clone().requires_grad_()
    loss, logits = contrastive_loss(mine1, mine2, 3.0)
    loss.backward()
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump({"loss": loss.item(), "shape": list(logits.shape), "grad1": mine1.grad.tolist(),
                   "grad2": mine2.grad.tolist()}, fh)
    dist.destroy_process_group()

if __name__ == "__main__":
    torch.multiprocessing.spawn(work, args=(int(sys.argv[1]), sys.argv[2]), nprocs=2)
'''


@pytest.mark.slow
def test_contrastive_gather_passes_every_process_its_share_of_the_global_gradient(tmp_path):
    # Two gloo processes, each scoring its 4 rows against the global batch of 8. Data parallelism averages the
    # processes' parameter gradients, so each process's rows must receive the sum over processes of the gradient of
    # their losses: twice the gradient of the mean loss, computed here in one process.
    import json
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "gather.py"
    script.write_text(_GATHER_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(port), str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    torch.manual_seed(0)
    view1, view2 = torch.randn(8, 5).requires_grad_(), torch.randn(8, 5).requires_grad_()
    n1, n2 = F.normalize(view1, dim=-1), F.normalize(view2, dim=-1)
    per_process = []
    for r in (0, 1):
        rows = slice(4 * r, 4 * r + 4)
        targets = torch.arange(4) + 4 * r
        per_process.append(0.5 * (F.cross_entropy(3.0 * n1[rows] @ n2.t(), targets)
                                  + F.cross_entropy(3.0 * n2[rows] @ n1.t(), targets)))
    torch.stack(per_process).mean().backward()
    for r, got in enumerate(ranks):
        assert got["shape"] == [4, 8] and got["loss"] == pytest.approx(per_process[r].item(), abs=1e-6)
        torch.testing.assert_close(torch.tensor(got["grad1"]), 2 * view1.grad[4 * r:4 * r + 4], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.tensor(got["grad2"]), 2 * view2.grad[4 * r:4 * r + 4], rtol=1e-5, atol=1e-6)
