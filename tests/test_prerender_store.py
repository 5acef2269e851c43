"""The pre-rendered store as Parquet shards (a `datasets` dataset): round trip, parallel and resumed writing, streaming,
node splits, refusals and pushing (to a stand-in, never the network)."""

import argparse
import json
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from moleclip.processing import prerendered_store
from moleclip.processing.prerendered_store import PRERENDER_FORMAT, PrerenderedImages, prerender, push_store_to_hub
from moleclip.processing.rendering import CoordinateCache, DrawingStyle, random_style, render
from moleclip.processing.seeding import sample_rng

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "O=C(O)c1ccccc1", "C1CC", "C1CCCCC1",
          "CC(C)Cc1ccc(C)cc1", "OCC(O)CO", "c1ccncc1"]  # "C1CC" (unclosed ring) cannot be drawn
BAD = 5


def small_store(path, n_jobs=1, **kwargs):
    kwargs = {"n_variants": 2, "seed": 3, "shard_size": 4, "row_group_size": 2, "progress": False, **kwargs}
    return prerender(SMILES, path, n_jobs=n_jobs, **kwargs)


def shard_bytes(store):
    return [Path(p).read_bytes() for p in store.data_files()]


def test_round_trip_reads_what_drawing_gives_now(tmp_path):
    store = small_store(tmp_path / "store", rows=np.arange(10) + 100)
    assert len(store) == 10 and store.n_variants == 2 and store.size == 224 and store.meta["failed"] == 1
    assert store.files == [f"data/train-0000{i}-of-00003.parquet" for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["README.md", "data", "manifest.json"]
    assert store.smiles() == SMILES and store.rows().tolist() == list(range(100, 110))
    for slot in (0, 2, 7, 9):  # first, middle of a row group, other shards
        mol = CoordinateCache(max_size=1).get(SMILES[slot], index=slot)
        np.testing.assert_array_equal(store.read(slot), render(mol, size=224, style=DrawingStyle()))  # lossless
        for v in range(2):
            now = render(mol, size=224, style=random_style(sample_rng(3, slot, v)))
            np.testing.assert_array_equal(store.read(slot, v), now)
        assert not np.array_equal(store.read(slot, 0), store.read(slot, 1))
        assert not np.array_equal(store.read(slot), store.read(slot, 0))
    assert store.read(BAD) is None and store.read(BAD, 1) is None
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    assert store.read_pair(BAD, rng) is None and rng.bit_generator.state == before  # as if the store lacked it
    plain, styled = store.read_pair(2, np.random.default_rng(0))
    variant = int(np.random.default_rng(0).integers(2))
    np.testing.assert_array_equal(plain, store.read(2))
    np.testing.assert_array_equal(styled, store.read(2, variant))
    with pytest.raises(IndexError):
        store.read(10)

    assert store.slots_for(SMILES).tolist() == list(range(10))
    assert store.slots_for([SMILES[7], "CCCCCCCC", SMILES[0]]).tolist() == [7, -1, 0]
    # Pickled into a worker after reading (open shards): the copy opens its own.
    copy = pickle.loads(pickle.dumps(store))
    assert copy._open == {} and np.array_equal(copy.read(9, 1), store.read(9, 1))
    # The Image feature travels in the shards' schema: datasets decodes them without being told.
    assert json.loads(pq.read_schema(store.data_files()[0]).metadata[b"huggingface"])["info"]["features"]["plain"] == {
        "_type": "Image"}


def test_parallel_write_equals_serial(tmp_path):
    serial, parallel = small_store(tmp_path / "serial"), small_store(tmp_path / "parallel", n_jobs=2)
    assert shard_bytes(serial) == shard_bytes(parallel)  # byte for byte: drawing is a pure function of the slot
    assert serial.meta == parallel.meta


def test_resume_after_a_kill_draws_only_the_missing_shards(tmp_path, monkeypatch):
    reference = small_store(tmp_path / "reference")
    write = prerendered_store._write_shard

    def killed_in_shard_1(task):
        if task[2] == 4:  # first slot of shard 1: the process dies half-way through writing it
            partial = Path(task[0]) / (task[1] + ".partial")
            partial.write_bytes(Path(reference.data_files()[1]).read_bytes()[:3000])
            raise KeyboardInterrupt
        return write(task)

    monkeypatch.setattr(prerendered_store, "_write_shard", killed_in_shard_1)
    with pytest.raises(KeyboardInterrupt):
        small_store(tmp_path / "store")
    data = tmp_path / "store" / "data"
    assert sorted(p.name for p in data.iterdir()) == ["train-00000-of-00003.parquet", "train-00001-of-00003.parquet.partial"]
    with pytest.raises(Exception):
        pq.read_metadata(data / "train-00001-of-00003.parquet.partial")  # a half shard does not read cleanly
    with pytest.raises(ValueError, match="unfinished.*re-run"):
        PrerenderedImages(tmp_path / "store")
    with pytest.raises(ValueError, match="other settings \\(size\\)"):
        small_store(tmp_path / "store", size=128)
    # A shard cut short under its final name (a copy gone wrong) is not trusted either.
    (data / "train-00002-of-00003.parquet").write_bytes(Path(reference.data_files()[2]).read_bytes()[:-100])

    drawn = []
    monkeypatch.setattr(prerendered_store, "_write_shard", lambda task: drawn.append(task[2]) or write(task))
    store = small_store(tmp_path / "store")
    assert sorted(drawn) == [4, 8] and shard_bytes(store) == shard_bytes(reference) and store.meta == reference.meta
    assert not list(data.glob("*.partial")) and not (tmp_path / "store" / "prerender_plan.json").exists()
    with pytest.raises(FileExistsError):
        small_store(tmp_path / "store")


def test_streaming_yields_every_picture_and_nodes_split_it_exactly(tmp_path):
    store = small_store(tmp_path / "store", shard_size=3, row_group_size=1)  # 4 shards
    rows = list(store.streaming())
    assert [r["row"] for r in rows] == list(range(10)) and [r["smiles"] for r in rows] == SMILES
    for slot, r in enumerate(rows):
        for column, variant in (("plain", None), ("styled_0", 0), ("styled_1", 1)):
            if slot == BAD:
                assert r[column] is None
            else:
                np.testing.assert_array_equal(np.asarray(r[column].convert("RGB")), store.read(slot, variant))
    # 2 nodes: whole shards each; 3 nodes: 4 shards do not divide, every third molecule each. Either way: all, once.
    for world_size in (2, 3):
        parts = [[r["row"] for r in store.streaming(rank=rank, world_size=world_size)] for rank in range(world_size)]
        assert sorted(sum(parts, [])) == list(range(10)) and all(parts)
    # The folder itself is a Hub-style dataset: its card's `configs` find the shards.
    import datasets

    folder = datasets.load_dataset(str(store.path), split="train", streaming=True)
    assert [r["row"] for r in folder] == list(range(10))


def test_old_and_mismatched_stores_are_refused(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "meta.json").write_text(json.dumps({"format": "moleclip-prerendered-png-v1", "size": 224}))
    with pytest.raises(ValueError, match="old format.*re-run `moleclip prerender`"):
        PrerenderedImages(old)
    with pytest.raises(FileExistsError):
        small_store(old)
    with pytest.raises(FileNotFoundError, match="not a pre-rendered store"):
        PrerenderedImages(tmp_path)
    store = small_store(tmp_path / "store", size=96)
    with pytest.raises(ValueError, match="96 px.*224 px are needed"):
        PrerenderedImages(store.path, size=224)
    assert PrerenderedImages(store.path, size=96).read(0).shape == (96, 96, 3)
    manifest = json.loads((store.path / "manifest.json").read_text())
    (store.path / "manifest.json").write_text(json.dumps(dict(manifest, format="moleclip-prerendered-parquet-v9")))
    with pytest.raises(ValueError, match=f"is not {PRERENDER_FORMAT}"):
        PrerenderedImages(store.path)


def test_overwrite_replaces_a_store_but_never_deletes_another_folder(tmp_path):
    data = tmp_path / "my_data"
    data.mkdir()
    (data / "chembl.smi").write_text("CCO\n")
    with pytest.raises(FileExistsError, match="is not a pre-rendered store"):
        small_store(data, overwrite=True)  # the folder named by mistake keeps its files
    assert (data / "chembl.smi").read_text() == "CCO\n"
    with pytest.raises(FileExistsError, match="is a file"):
        small_store(data / "chembl.smi", overwrite=True)
    store = small_store(tmp_path / "store")
    assert len(small_store(store.path, overwrite=True, n_variants=1)) == len(SMILES)  # a store is replaced
    assert PrerenderedImages(store.path).n_variants == 1


def test_a_seed_or_size_no_drawing_can_use_is_refused_before_drawing(tmp_path):
    # inside the drawing either would fail every molecule, a store of empty pictures that reads as "could not be drawn"
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        small_store(tmp_path / "a", seed=-1)
    with pytest.raises(ValueError, match="size must be a positive number of pixels, got 0"):
        small_store(tmp_path / "b", size=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_damaged_store_stops_pretraining_instead_of_giving_blank_pictures(tmp_path):
    from moleclip.processing.pretraining_data import TwoViewDataset

    store = small_store(tmp_path / "store")
    labels = np.zeros((len(SMILES), 1), dtype=np.int64)
    dataset = TwoViewDataset(SMILES, labels, prerendered=PrerenderedImages(store.path))
    assert dataset[(0, BAD)]["pseudo_labels"].tolist() == [-100]  # a molecule that cannot be drawn: ignored, as before
    # a shard cut short (an interrupted copy or download): its molecules are not "molecules that cannot be drawn"
    shard = Path(store.data_files()[0])
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    damaged = TwoViewDataset(SMILES, labels, prerendered=PrerenderedImages(store.path))
    with pytest.raises(OSError, match="store .* cannot be read at data/train-00000-of-00003.parquet .*damaged"):
        damaged[(0, 0)]


def test_prerender_push_in_offline_mode_is_refused_before_drawing(tmp_path, monkeypatch):
    from moleclip.training.serving.hub import HubUnavailableError
    from moleclip_cli import prerender as command

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = tmp_path / "mols.smi"
    source.write_text("\n".join(SMILES) + "\n")
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--input", str(source), "--output", str(tmp_path / "store"), "--n-jobs", "1",
                              "--no-progress", "--push-to-hub", "lab/drawings"])
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        command.run(args)
    assert not (tmp_path / "store").exists()  # nothing was drawn


def test_a_store_in_which_no_molecule_could_be_drawn_is_not_finished(tmp_path, monkeypatch):
    def broken(*args, **kwargs):  # a drawing that cannot work here (a font, Cairo), or a file of no SMILES at all
        raise RuntimeError("no font")

    from moleclip.processing import image_processing_moleclip

    monkeypatch.setattr(image_processing_moleclip, "render", broken)  # inside the processor that draws the store
    with pytest.raises(RuntimeError, match="none of the 10 molecules could be drawn.*--overwrite"):
        small_store(tmp_path / "store")
    with pytest.raises(ValueError, match="unfinished pre-rendered store"):
        PrerenderedImages(tmp_path / "store")
    monkeypatch.undo()
    assert small_store(tmp_path / "store", overwrite=True).meta["failed"] == 1  # drawn again once drawing works


def test_a_store_without_random_style_drawings_is_refused(tmp_path):
    from moleclip.processing.pretraining_data import TwoViewDataset

    # pretraining's second view is a random-style drawing: a store without any would pair each drawing with itself
    with pytest.raises(ValueError, match="n_variants must be >= 1"):
        small_store(tmp_path / "none", n_variants=0)
    assert not (tmp_path / "none").exists()
    store = small_store(tmp_path / "store")
    # a store written before the refusal existed, with no variants, is refused where pretraining would read it
    manifest = json.loads((store.path / "manifest.json").read_text())
    (store.path / "manifest.json").write_text(json.dumps(dict(manifest, n_variants=0)))
    with pytest.raises(ValueError, match="no random-style drawings.*--variants 1 or more"):
        TwoViewDataset(SMILES, prerendered=PrerenderedImages(store.path))


class StandInHub:
    """Stands in for `huggingface_hub.HfApi`: "uploads" a folder by copying it to a local path."""

    def __init__(self, root):
        self.root, self.calls = Path(root), []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs.get("repo_type"), kwargs.get("private")))
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, repo_id, folder_path, ignore_patterns=(), **kwargs):
        import fnmatch

        folder, target = Path(folder_path), self.root / repo_id
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        files = [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in ignore_patterns)]
        for name in files:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, target / name)
        self.calls.append(("upload_folder", repo_id, kwargs.get("repo_type"), files))
        return SimpleNamespace(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/0123")


def test_push_to_a_stand_in_hub_and_read_the_copy(tmp_path, capsys):
    from moleclip_cli import prerender as command

    source = tmp_path / "mols.smi"
    source.write_text("smiles\n" + "\n".join(SMILES) + "\n")
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--input", str(source), "--output", str(tmp_path / "store"), "--variants", "1",
                              "--n-jobs", "1", "--shard-size", "4", "--no-progress", "--push-to-hub", "lab/drawings",
                              "--private"])
    hub = StandInHub(tmp_path / "hub")
    assert command.run(args, hub_api=hub) == 0
    out = capsys.readouterr().out
    assert "10 molecules x 2 drawings, 3 shard(s)" in out and "pushed to lab/drawings" in out
    assert hub.calls[0] == ("create_repo", "lab/drawings", "dataset", True)
    assert hub.calls[1][:3] == ("upload_folder", "lab/drawings", "dataset")
    assert hub.calls[1][3] == ["README.md", "data/train-00000-of-00003.parquet", "data/train-00001-of-00003.parquet",
                               "data/train-00002-of-00003.parquet", "manifest.json"]
    local, pushed = PrerenderedImages(tmp_path / "store"), PrerenderedImages(tmp_path / "hub" / "lab/drawings")
    assert pushed.smiles() == SMILES and np.array_equal(pushed.read(9, 0), local.read(9, 0))
    with pytest.raises(ValueError, match="unfinished"):  # nothing is uploaded from an unfinished store
        (tmp_path / "store" / "manifest.json").rename(tmp_path / "store" / "prerender_plan.json")
        push_store_to_hub(tmp_path / "store", "lab/drawings", api=hub)
    assert len(hub.calls) == 2


def test_dataloader_workers_read_the_store_as_the_parent_does(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    from moleclip.processing.pretraining_data import TwoViewDataset, collate_two_views

    store = small_store(tmp_path / "store")
    store.read(0)  # open shards in the parent: the workers must not inherit them
    dataset = TwoViewDataset(SMILES, seed=1, prerendered=store, augmentation="none")
    with pytest.warns(UserWarning, match="could not be drawn"):  # the undrawable molecule, as without a store
        here = collate_two_views([dataset[i] for i in range(10)])
    loader = DataLoader(dataset, batch_size=5, num_workers=2, collate_fn=collate_two_views,
                        multiprocessing_context="spawn")  # spawn: the store really travels pickled
    batches = list(loader)  # one batch from each worker
    for key in ("pixel_values", "augmented_pixel_values", "indices"):
        assert torch.equal(here[key], torch.cat([b[key] for b in batches]))


def test_the_store_is_drawn_by_the_processor_and_pretraining_refuses_one_drawn_otherwise(tmp_path):
    # the store drew with the renderer directly: a backbone whose processor draws R-groups pretrained on pictures
    # without them whenever a store was used
    from moleclip.processing.image_processing_moleclip import MoleCLIPImageProcessor
    from moleclip.processing.pretraining_data import TwoViewDataset

    processor = MoleCLIPImageProcessor(size=96, r_groups=True)
    store = prerender(SMILES[:3], tmp_path / "store", size=96, n_variants=1, seed=3, n_jobs=1, progress=False,
                      processor=processor)
    assert store.drawing == {"r_groups": True, "drawing_backend": "hybrid"}
    for slot in range(3):
        np.testing.assert_array_equal(store.read(slot), processor.render_images(SMILES[slot])[0][0])
        styled = processor.render_images(SMILES[slot], randomize_drawing=True, seed=sample_rng(3, slot, 0))[0][0]
        np.testing.assert_array_equal(store.read(slot, 0), styled)
    assert not np.array_equal(store.read(0), MoleCLIPImageProcessor(size=96).render_images(SMILES[0])[0][0])
    TwoViewDataset(SMILES[:3], size=96, prerendered=store, processor=processor)
    with pytest.raises(ValueError, match="was drawn with .*'r_groups': True.* re-run `moleclip prerender` with --model"):
        TwoViewDataset(SMILES[:3], size=96, prerendered=store)
