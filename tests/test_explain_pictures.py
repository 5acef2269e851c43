"""`moleclip explain`'s pictures read at the size they are written: methods named in words, a colour bar that says
which colour means which sign of what, atom colours that are the atoms' scores, a pixel map that shows over the
drawing, and nothing cut off."""

import numpy as np
import pytest
import torch
from rdkit import Chem

from moleclip.processing.rendering import DrawingStyle, prepare_for_drawing, render
from moleclip.training.explaining.explainers import (
    SIGNED_COLOURS,
    MoleculeExplanation,
    _atom_field,
    _layout,
    atom_figure,
    atom_picture,
    heatmap_figure,
    heatmap_picture,
)
from moleclip_cli.main import main as cli

SMILES = "CC(=O)Nc1ccc(O)cc1"
TARGET = "log_solubility_measured_at_25_degrees_in_log_mol_per_litre"


def _explanation(task="regression", with_picture=True) -> MoleculeExplanation:
    mol = Chem.MolFromSmiles(SMILES)
    prepared = prepare_for_drawing(mol)
    heavy = list(range(mol.GetNumAtoms()))
    scores = {"integrated_gradients": np.linspace(-0.3, 0.5, len(heavy)),
              "attention_rollout": np.linspace(0.01, 0.05, len(heavy))}
    picture = render(prepared, 224, DrawingStyle(), False, "cairo") if with_picture else None
    maps = {}
    if with_picture:
        ink = (picture < 200).any(axis=2)
        rng = np.random.default_rng(0)
        # like integrated gradients: on the ink only, a few large pixels and many small ones, one sign per half
        sign = np.where(np.arange(224) < 112, 1.0, -1.0)[None, :]
        maps["integrated_gradients"] = ink * sign * rng.lognormal(0.0, 1.5, (224, 224)) * 1e-4
        maps["attention_rollout"] = np.kron(rng.uniform(0.5, 1.5, (14, 14)), np.ones((16, 16))) / 224 ** 2
    return MoleculeExplanation(SMILES, mol, heavy, [a.GetSymbol() for a in mol.GetAtoms()], scores, 1.2, -2.31,
                               picture=picture, pixel_maps=maps, coords=_layout(prepared, heavy), target=TARGET,
                               task=task)


def _inside(fig, artist) -> bool:
    box = artist.get_window_extent(fig.canvas.get_renderer())
    return box.x0 >= -0.5 and box.y0 >= -0.5 and box.x1 <= fig.bbox.x1 + 0.5 and box.y1 <= fig.bbox.y1 + 0.5


def _colour_bars(fig) -> list:
    return [ax for ax in fig.axes if hasattr(ax, "_colorbar")]


def _panels(fig) -> list:
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]


def test_atom_figure_names_methods_in_words_with_a_colour_key_per_panel():
    explanation = _explanation()
    fig = atom_figure(explanation, size=300)
    fig.canvas.draw()
    assert [ax.get_title() for ax in _panels(fig)] == ["integrated gradients", "attention rollout"]
    signed, shares = _colour_bars(fig)
    key = "".join(signed.get_xlabel().split())  # broken onto lines to fit
    assert key == "".join(f"contribution to predicted {TARGET} (pink lowers it, green raises it)".split())
    # the colour bar's ends are the largest |score|, so its numbers are the atoms' scores
    assert signed._colorbar.norm.vmax == pytest.approx(0.5) and signed._colorbar.norm.vmin == pytest.approx(-0.5)
    assert "share of the pooled token's attention" in shares.get_xlabel()
    headline = "".join(fig._suptitle.get_text().split())
    assert headline == "".join(f"{TARGET}: predicted -2.31".split())
    for text in [fig._suptitle, *(ax.title for ax in _panels(fig)), *(ax.xaxis.label for ax in _colour_bars(fig))]:
        assert _inside(fig, text), text.get_text()


def test_a_classification_key_speaks_of_the_logit_and_the_title_of_the_probability():
    fig = atom_figure(_explanation(task="classification", with_picture=False), size=300)
    assert "thelogitof" in "".join(_colour_bars(fig)[0].get_xlabel().split())
    assert "predictedprobability" in "".join(fig._suptitle.get_text().split())


def test_an_atoms_colour_is_its_own_score():
    """The field coloured around each atom is its score (neighbours add at most a few per cent), so the atom with the
    largest score sits in the colour bar's darkest green and the smallest in its darkest pink."""
    explanation = _explanation(with_picture=False)
    mol = Chem.Mol(explanation.mol)
    prepared = prepare_for_drawing(mol)
    weights = explanation.scores["integrated_gradients"]
    from rdkit.Chem.Draw import rdMolDraw2D

    _, field = _atom_field(prepared, weights, 400)
    drawer = rdMolDraw2D.MolDraw2DCairo(400, 400)
    drawer.DrawMolecule(prepared)
    for atom, weight in enumerate(weights):
        point = drawer.GetDrawCoords(atom)
        assert field[int(point.y), int(point.x)] == pytest.approx(weight, abs=0.05 * np.abs(weights).max())
    assert np.allclose(SIGNED_COLOURS(1.0)[:3], (0.153, 0.392, 0.098), atol=0.01)  # PiYG's green end
    assert np.allclose(SIGNED_COLOURS(0.5)[:3], 1.0)  # no effect: white


def test_the_integrated_gradients_map_shows_over_the_drawing():
    """A map like integrated gradients' (on the ink only, heavy-tailed) colours most of the ink it lies on, green
    where it raises the output and pink where it lowers it: shown raw, most ink pixels got almost no colour."""
    explanation = _explanation()
    fig = heatmap_figure(explanation)
    fig.canvas.draw()
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == ["the drawing the model saw",
                                                 "integrated gradients (smoothed over 2 px)", "attention rollout"]
    assert len(_colour_bars(fig)) == 2
    shown = np.asarray(panels[1].images[0].get_array())[::2, ::2]  # drawn two pixels for one
    ink = (explanation.picture < 200).any(axis=2)
    green = shown[..., 1] - shown[..., 0]
    left, right = ink.copy(), ink.copy()
    left[:, 112:], right[:, :112] = False, False
    # PiYG's green end is 0.24 greener than red, its pink end 0.55 redder than green; the ink is mid grey
    assert np.median(green[left]) > 0.05 and np.median(-green[right]) > 0.1
    for text in [fig._suptitle, *(ax.title for ax in panels), *(ax.xaxis.label for ax in _colour_bars(fig))]:
        assert _inside(fig, text), text.get_text()


def test_pictures_are_larger_than_the_drawing_and_cut_to_what_is_drawn():
    explanation = _explanation()
    atoms, pixels = atom_picture(explanation), heatmap_picture(explanation)
    assert atoms.width > 2 * 400 and pixels.width > 3 * 400
    for picture in (atoms, pixels):
        border = np.concatenate([np.asarray(picture)[:3].reshape(-1, 3), np.asarray(picture)[-3:].reshape(-1, 3)])
        assert (border == 255).all()


@pytest.fixture(scope="module")
def fingerprint_model(tmp_path_factory):
    from moleclip.training.kinds.baselines import FingerprintPredictor

    folder = tmp_path_factory.mktemp("fp") / "model"
    torch.manual_seed(0)
    FingerprintPredictor(256, 1, "regression", hidden_size=16, target_names=["logS"]).save(folder)
    return folder


def test_explain_counts_one_molecule_in_the_singular(fingerprint_model, tmp_path, capsys):
    assert cli(["explain", "--model", str(fingerprint_model), "--smiles", "CCO", "--output-dir", str(tmp_path / "one"),
                "--no-progress"]) == 0
    assert "explained 1 molecule (logS, fingerprint_occlusion)" in capsys.readouterr().out
    assert cli(["explain", "--model", str(fingerprint_model), "--smiles", "CCO", "CCN", "--output-dir",
                str(tmp_path / "two"), "--no-progress"]) == 0
    assert "explained 2 molecules (logS" in capsys.readouterr().out


def test_render_counts_one_file_in_the_singular(tmp_path, capsys):
    assert cli(["render", "CCO", "--output-dir", str(tmp_path / "one")]) == 0
    assert "wrote 1 PNG file to" in capsys.readouterr().out
