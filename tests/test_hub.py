"""Sharing: saved and pushed checkpoints load through the auto classes in a fresh process without this package.

The Hub cannot be reached here, so pushes go to a recording stand-in for the Hub API that writes what it receives
into a local Hub cache (the layout `huggingface_hub` reads: models--org--name/refs/main + snapshots/<commit>/...).
Pulls then run in a new Python process with HF_HUB_OFFLINE=1, reading that cache, with `import moleclip` blocked.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from moleclip import MoleCLIPConfig, MoleCLIPForPropertyPrediction, MoleCLIPImageProcessor, MoleCLIPModel
from moleclip.processing.augment import CLIP_MEAN, CLIP_STD

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]

# Runs first in the fresh process: any attempt to import this package fails, as on a machine without it.
BLOCK_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, sys
    class _NoMoleclip(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "moleclip" or name.startswith("moleclip."):
                raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
            return None
    sys.meta_path.insert(0, _NoMoleclip())
    """
)

LOAD_AND_EMBED = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification
    source, smiles = sys.argv[1], json.loads(sys.argv[2])
    kw = dict(trust_remote_code=True)
    config = AutoConfig.from_pretrained(source, **kw)
    processor = AutoImageProcessor.from_pretrained(source, **kw)
    encoder = AutoModel.from_pretrained(source, **kw).eval()
    predictor = AutoModelForImageClassification.from_pretrained(source, **kw).eval()
    pixels = processor(smiles, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        result = {
            "config": type(config).__name__, "processor": type(processor).__name__,
            "encoder": type(encoder).__name__, "predictor": type(predictor).__name__,
            "pixels": pixels.tolist(), "embeds": encoder(pixel_values=pixels).image_embeds.tolist(),
            "logits": predictor(pixel_values=pixels).logits.tolist(),
        }
    print("RESULT" + json.dumps(result))
    """
)


def run_fresh(source: str, env_extra: dict, cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHONPATH"))}
    env.update(env_extra)
    env["HF_MODULES_CACHE"] = str(cwd / "modules")
    code = BLOCK_PACKAGE + LOAD_AND_EMBED
    proc = subprocess.run([sys.executable, "-c", code, source, json.dumps(SMILES)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    config = MoleCLIPConfig.from_preset("tiny", num_targets=2, task="regression", target_names=["a", "b"])
    model = MoleCLIPForPropertyPrediction(config).eval()
    model.set_target_scaling([1.0, -2.0], [0.5, 3.0])
    return model


def expected_outputs(model):
    processor = MoleCLIPImageProcessor()
    pixels = processor(SMILES, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return pixels, model.moleclip(pixel_values=pixels).image_embeds, model(pixel_values=pixels).logits


def assert_matches(result, model):
    pixels, embeds, logits = expected_outputs(model)
    assert result["config"] == "MoleCLIPConfig" and result["processor"] == "MoleCLIPImageProcessor"
    assert result["encoder"] == "MoleCLIPModel" and result["predictor"] == "MoleCLIPForPropertyPrediction"
    torch.testing.assert_close(torch.tensor(result["pixels"]), pixels)
    torch.testing.assert_close(torch.tensor(result["embeds"]), embeds, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(result["logits"]), logits, rtol=1e-4, atol=1e-5)


def test_saved_folder_loads_with_remote_code_in_fresh_process(tmp_path, predictor):
    from moleclip.training.serving.hub import save_model_dir

    folder = save_model_dir(tmp_path / "model", predictor, MoleCLIPImageProcessor(), card={"dataset": "toy"})
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "configuration_moleclip.py",
            "modeling_moleclip.py", "image_processing_moleclip.py", "rendering.py", "cairo_replay.py", "augment.py",
            "molecules.py", "standardize.py"} <= files
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForImageClassification"}
    assert "AutoImageProcessor" in json.loads((folder / "preprocessor_config.json").read_text())["auto_map"]
    result = run_fresh(str(folder), {"HF_HUB_OFFLINE": "1"}, tmp_path)
    assert_matches(result, predictor)


PROCESS_IN_FRESH = textwrap.dedent(
    """
    import json, sys, torch
    folders, smiles, calls, use_package, out = sys.argv[1:6]
    if use_package == "1":
        import moleclip  # registers the class: no remote code
    from transformers import AutoImageProcessor
    result = {}
    for folder in json.loads(folders):
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        result[folder] = {"module": type(processor).__module__, "settings": processor.to_dict(),
                          "pixels": [processor(json.loads(smiles), **kw)["pixel_values"] for kw in json.loads(calls)]}
    torch.save(result, out)
    """
)


def process_fresh(folders: list[Path], smiles: list[str], calls: list[dict], use_package: bool, cwd: Path) -> dict:
    """Each saved processor, loaded in a new Python process (through remote code with this package blocked, or
    through the package), run on `smiles` once per keyword set in `calls`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHONPATH"))}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(cwd / "modules"))
    out = cwd / f"fresh-{int(use_package)}.pt"
    code = PROCESS_IN_FRESH if use_package else BLOCK_PACKAGE + PROCESS_IN_FRESH
    args = [json.dumps([str(f) for f in folders]), json.dumps(smiles), json.dumps(calls), "1" if use_package else "0", str(out)]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {Path(k).name: v for k, v in torch.load(out).items()}


def test_saved_processors_draw_the_same_pixels_in_a_fresh_process_and_through_remote_code(tmp_path, predictor):
    from moleclip.processing.rendering import fast_backend_available
    from moleclip.training.serving.hub import save_model_dir

    settings = {"hybrid": {}, "cairo": {"drawing_backend": "cairo"}, "bgr": {"channel_order": "bgr"}}
    if fast_backend_available():
        settings["fast"] = {"drawing_backend": "fast"}
    processors = {name: MoleCLIPImageProcessor(size=96, **kw) for name, kw in settings.items()}
    folders = []
    for name, processor in processors.items():
        if name == "bgr":  # also the way a converted checkpoint travels: next to its model
            folders.append(save_model_dir(tmp_path / name, predictor, processor))
        else:
            processor.save_pretrained(tmp_path / name)
            folders.append(tmp_path / name)
    smiles = ["OCCN", "CC(=O)Nc1ccc(O)cc1", "OC(=O)c1ccc(Cl)cc1"]
    calls = [{}, {"randomize_drawing": True, "augmentation": "default", "seed": 3}]
    expected = {name: [p(smiles, **kw)["pixel_values"] for kw in calls] for name, p in processors.items()}
    for use_package in (False, True):
        fresh = process_fresh(folders, smiles, calls, use_package, tmp_path)
        for name, processor in processors.items():
            got = fresh[name]
            assert got["module"].startswith("moleclip" if use_package else "transformers_modules"), got["module"]
            assert got["settings"]["channel_order"] == processor.channel_order
            assert got["settings"]["drawing_backend"] == processor.drawing_backend
            for mine, theirs in zip(expected[name], got["pixels"]):
                assert torch.equal(mine, theirs), (name, use_package)
    # The settings really act: each back end, and the channel order, give other pixels.
    assert not torch.equal(expected["hybrid"][1], expected["cairo"][1])  # random styles: replay vs RDKit's Cairo
    assert torch.equal(expected["hybrid"][0], expected["cairo"][0])  # plain drawings: RDKit's Cairo in both
    bgr, rgb = expected["bgr"][0], expected["hybrid"][0]
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    as_u8 = lambda x: ((x * std + mean) * 255).round()  # noqa: E731  (the statistics in the order given)
    torch.testing.assert_close(as_u8(bgr), as_u8(rgb).flip(1))
    red = lambda x, c: int(((x[:, c] > 180) & (x[:, [i for i in range(3) if i != c]] < 100).all(1)).sum())  # noqa: E731
    assert red(as_u8(rgb)[:1], 0) > 10 and red(as_u8(bgr)[:1], 2) == red(as_u8(rgb)[:1], 0)  # red O: channel 2 in bgr


class RecordingHub:
    """Stands in for `huggingface_hub.HfApi`: records calls and writes commits into a local Hub cache."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.calls = []

    def _snapshot(self, repo_id: str) -> Path:
        repo = self.cache / ("models--" + repo_id.replace("/", "--"))
        ref = repo / "refs" / "main"
        if ref.is_file():
            return repo / "snapshots" / ref.read_text().strip()
        return None

    def _commit(self, repo_id: str, files: dict[str, Path], delete_patterns=()) -> SimpleNamespace:
        import fnmatch

        repo = self.cache / ("models--" + repo_id.replace("/", "--"))
        previous = self._snapshot(repo_id)
        digest = hashlib.sha1(repr(sorted((k, v.read_bytes()) for k, v in files.items())).encode()).hexdigest()
        snapshot = repo / "snapshots" / digest
        if previous is not None and previous != snapshot:
            shutil.copytree(previous, snapshot, dirs_exist_ok=True)  # a commit adds to what the repo had
            for old in [p for p in snapshot.rglob("*") if p.is_file()]:  # ... less what it deletes, as the Hub does
                name = old.relative_to(snapshot).as_posix()
                if name not in files and any(fnmatch.fnmatch(name, pattern) for pattern in delete_patterns or ()):
                    old.unlink()
        for path_in_repo, source in files.items():
            target = snapshot / path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(digest)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{digest}", oid=digest)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id))
        return SimpleNamespace(repo_id=repo_id)

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", repo_id, sorted(op.path_in_repo for op in operations)))
        return self._commit(repo_id, {op.path_in_repo: Path(op.path_or_fileobj) for op in operations})

    def upload_folder(self, repo_id, folder_path, ignore_patterns=(), **kwargs):
        import fnmatch

        folder = Path(folder_path)
        files = {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file()}
        files = {k: v for k, v in files.items() if not any(fnmatch.fnmatch(k, pat) for pat in ignore_patterns)}
        self.calls.append(("upload_folder", repo_id, sorted(files)))
        return self._commit(repo_id, files, kwargs.get("delete_patterns"))


def test_push_model_dir_then_pull_offline(tmp_path, predictor):
    from moleclip.training.serving.hub import push_model_dir, save_model_dir

    folder = save_model_dir(tmp_path / "model", predictor, MoleCLIPImageProcessor(), card={"repo_id": "lab/esol-moleclip"})
    (folder / "checkpoints" / "step_5").mkdir(parents=True)
    (folder / "checkpoints" / "step_5" / "optimizer.bin").write_bytes(b"x")
    hub = RecordingHub(tmp_path / "hub")
    url = push_model_dir(folder, "lab/esol-moleclip", api=hub)
    assert url.startswith("https://huggingface.co/lab/esol-moleclip/commit/")
    uploaded = hub.calls[-1][2]
    assert "model.safetensors" in uploaded and not any(name.startswith("checkpoints") for name in uploaded)
    result = run_fresh("lab/esol-moleclip", {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}, tmp_path)
    assert_matches(result, predictor)


def test_model_and_processor_push_to_hub(tmp_path, predictor, monkeypatch):
    import transformers.utils.hub as transformers_hub

    hub = RecordingHub(tmp_path / "hub")
    monkeypatch.setattr(transformers_hub, "hf_api", lambda: hub)
    monkeypatch.setattr(transformers_hub, "create_and_tag_model_card", lambda *a, **k: SimpleNamespace(save=lambda path: Path(path).write_text("card")))
    predictor.push_to_hub("lab/pushed")
    MoleCLIPImageProcessor().push_to_hub("lab/pushed")
    assert [c[0] for c in hub.calls] == ["create_repo", "create_commit", "create_repo", "create_commit"]
    assert "modeling_moleclip.py" in hub.calls[1][2] and "image_processing_moleclip.py" in hub.calls[3][2]
    result = run_fresh("lab/pushed", {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}, tmp_path)
    assert_matches(result, predictor)


def test_push_refuses_offline_mode(tmp_path, predictor, monkeypatch):
    from moleclip.training.serving.hub import HubUnavailableError, push_model_dir, save_model_dir

    folder = save_model_dir(tmp_path / "m", predictor, MoleCLIPImageProcessor())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        push_model_dir(folder, "lab/x")


def test_unreachable_backbone_error_says_what_to_do(tmp_path, monkeypatch, go_offline):
    from moleclip.training.serving.hub import HubUnavailableError, load_backbone

    go_offline(monkeypatch, tmp_path / "empty-cache")
    with pytest.raises(HubUnavailableError) as info:
        load_backbone("openai/clip-vit-base-patch16")
    message = str(info.value)
    assert "tiny" in message and "local folder" in message and "HF_HUB_OFFLINE" in message


def test_init_factor_scales_only_a_presets_random_weights(tmp_path):
    from moleclip.training.serving.hub import load_backbone

    torch.manual_seed(0)
    plain = load_backbone("tiny")
    torch.manual_seed(0)
    scaled = load_backbone("tiny", MoleCLIPForPropertyPrediction, init_factor=5, num_targets=2,
                           vision_config={"num_hidden_layers": 1})
    assert scaled.config.vision_config.initializer_factor == 5.0
    assert scaled.config.vision_config.num_hidden_layers == 1  # other vision overrides survive
    weight = lambda m: m.moleclip.vision_model.embeddings.patch_embedding.weight if hasattr(m, "moleclip") else \
        m.vision_model.embeddings.patch_embedding.weight  # noqa: E731
    ratio = (weight(scaled).std() / weight(plain).std()).item()
    assert 4.5 < ratio < 5.5
    plain.save_pretrained(tmp_path / "checkpoint")
    with pytest.raises(ValueError, match="only applies to a randomly initialised preset"):
        load_backbone(str(tmp_path / "checkpoint"), init_factor=5)
    with pytest.raises(ValueError, match="positive"):
        load_backbone("tiny", init_factor=0)


def test_a_fresh_head_is_announced_in_one_line_and_missing_encoder_weights_are_refused(tmp_path, capfd, caplog):
    import logging

    from safetensors.torch import load_file, save_file

    from moleclip import MoleCLIPConfig, MoleCLIPForPropertyPrediction, MoleCLIPModel
    from moleclip.training.serving.hub import load_backbone

    MoleCLIPModel(MoleCLIPConfig.from_preset("tiny")).save_pretrained(tmp_path / "encoder")
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        load_backbone(str(tmp_path / "encoder"), MoleCLIPForPropertyPrediction, num_targets=2)
    captured = capfd.readouterr()
    assert "LOAD REPORT" not in captured.out + captured.err and "\x1b[" not in captured.out + captured.err
    announced = [r.getMessage() for r in caplog.records if "initialised" in r.getMessage()]
    assert announced == [f"{tmp_path / 'encoder'} has none: a new property head is initialised, to be trained"]

    weights = load_file(str(tmp_path / "encoder" / "model.safetensors"))
    weights.pop(next(k for k in weights if "encoder.layers.0" in k))
    save_file(weights, str(tmp_path / "encoder" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lacks or reshapes weights the model needs"):
        load_backbone(str(tmp_path / "encoder"), MoleCLIPForPropertyPrediction, num_targets=2)


def test_a_push_over_an_earlier_push_leaves_none_of_the_earlier_models_files(tmp_path, predictor):
    """A frozen run pushed first (its members are heads: ensemble/seed_1/member.json), a full run pushed to the same
    repository next: the frozen member's files must go, or predict reads the old head as seed 1's member."""
    from moleclip.training.finetuning.trust import MEMBER_FILE
    from moleclip.training.serving.hub import push_model_dir, save_model_dir

    hub = RecordingHub(tmp_path / "hub")
    first = save_model_dir(tmp_path / "frozen" / "model", predictor, MoleCLIPImageProcessor())
    (first / "ensemble" / "seed_1").mkdir(parents=True)
    (first / "ensemble" / "seed_1" / MEMBER_FILE).write_text("{}")
    (first / "ensemble" / "seed_3").mkdir(parents=True)
    (first / "ensemble" / "seed_3" / MEMBER_FILE).write_text("{}")
    (first / "LICENSE").write_text("MIT")  # as if added by hand to the repository: kept
    (first / "training_results.json").write_text("{}")  # as a pretraining run's model folder has it
    push_model_dir(first, "lab/esol", api=hub)
    second = save_model_dir(tmp_path / "full" / "model", predictor, MoleCLIPImageProcessor())
    save_model_dir(second / "ensemble" / "seed_1", predictor, MoleCLIPImageProcessor())
    (second / ".results.json.tmp-123.json").write_text("{")  # a write interrupted by a kill
    push_model_dir(second, "lab/esol", api=hub)
    pulled = {p.relative_to(hub._snapshot("lab/esol")).as_posix() for p in hub._snapshot("lab/esol").rglob("*")
              if p.is_file()}
    assert "ensemble/seed_1/model.safetensors" in pulled and "LICENSE" in pulled
    assert not any(name.startswith(("ensemble/seed_3", "ensemble/seed_1/" + MEMBER_FILE)) for name in pulled), pulled
    assert not any(".tmp-" in name for name in pulled) and "training_results.json" not in pulled


def test_a_push_that_may_be_public_says_it_carries_the_training_molecules(tmp_path, predictor):
    from moleclip.training.serving.hub import push_model_dir, save_model_dir

    folder = save_model_dir(tmp_path / "model", predictor, MoleCLIPImageProcessor())
    hub = RecordingHub(tmp_path / "hub")
    push_model_dir(folder, "lab/plain", api=hub)  # no training molecules in it: nothing to say
    (folder / "applicability.json").write_text(json.dumps({"metric": "tanimoto", "reference_ids": ["CCO", "CCN"],
                                                           "reference_labels": [[0.1], [0.7]]}))
    with pytest.warns(UserWarning, match=r"lab/esol: the upload holds the training molecules .*\(--hub-private\)"):
        push_model_dir(folder, "lab/esol", api=hub)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        push_model_dir(folder, "lab/esol-private", private=True, api=hub)


@pytest.mark.parametrize("value, offline", [("1", True), ("TRUE", True), ("on", True), ("0", False), ("no", False),
                                            ("off", False), ("FALSE", False), ("", False)])
def test_offline_mode_is_read_as_huggingface_hub_reads_it(monkeypatch, value, offline):
    from moleclip.training.serving.hub import HubUnavailableError, check_push_possible

    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    if offline:
        with pytest.raises(HubUnavailableError):
            check_push_possible()
    else:
        check_push_possible()
