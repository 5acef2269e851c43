"""Drawing molecules: fonts, styles, layouts and their cache, both drawing back ends, R-group labels."""

import io
import os
import pickle
import threading

import numpy as np
import pytest
from PIL import Image
from rdkit import Chem
from rdkit.Chem import AllChem
from rdkit.Chem.Draw import rdMolDraw2D

from moleclip.processing import cairo_replay, rendering
from moleclip.processing.molecules import InvalidMoleculeError
from moleclip.processing.rendering import (
    FONT_NAMES,
    R_GROUP_ELEMENTS,
    BACKENDS,
    DEFAULT_BACKEND,
    CoordinateCache,
    DrawingBackendError,
    DrawingStyle,
    FontNotFoundError,
    atom_draw_coords,
    fast_backend_available,
    fast_backend_info,
    find_fonts,
    prepare_for_drawing,
    r_group_labels,
    random_style,
    render,
)

needs_fast = pytest.mark.skipif(not fast_backend_available(), reason="no Cairo/FreeType libraries for the fast back end")

HARD = {
    "salt": "[Na+].[Cl-]",
    "charged": "C[N+](C)(C)CC(=O)[O-]",
    "metal": "[Fe+2].c1cc[cH-]c1.c1cc[cH-]c1",
    "complex": "Cl[Pt](Cl)([NH3])[NH3]",
    "stereo": "C[C@H](N)C(=O)O.F/C=C/F",
    "dative": "N->[Cu+2]<-N",
    "radical": "[CH2]C",
    "isotope": "[2H]C([2H])([2H])Cl",
    "chain_200": "C" * 200,
}


@pytest.fixture(scope="module")
def cache():
    return CoordinateCache()


@pytest.fixture(scope="module")
def fonts():
    return find_fonts()


def rdkit_png(mol, size=224):
    """RDKit's own default drawing of a prepared molecule, decoded."""
    drawer = rdMolDraw2D.MolDraw2DCairo(size, size)
    drawer.drawOptions().prepareMolsBeforeDrawing = False
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    return np.array(Image.open(io.BytesIO(drawer.GetDrawingText())).convert("RGB"))


# ----------------------------------------------------------------------------------------------------------- fonts
def test_find_fonts_returns_usable_files_from_the_paper_list(fonts):
    assert len(fonts) >= 5
    for path in fonts:
        assert os.path.isfile(path) and os.path.basename(path) in FONT_NAMES
    assert not any(os.path.basename(p) == "cmmi10.ttf" for p in fonts)  # draws '+' as a harpoon
    # The check is real: each font draws labels differently from RDKit's built-in font and from the others.
    mol = prepare_for_drawing(Chem.MolFromSmiles("OC(=O)c1ccc(Cl)cc1[NH3+]"))
    drawings = [render(mol, 96, DrawingStyle(font_file=p, font_size=20), backend="cairo") for p in fonts[:4]]
    drawings.append(render(mol, 96, DrawingStyle(font_size=20), backend="cairo"))
    assert len({d.tobytes() for d in drawings}) == len(drawings)


def test_missing_fonts_raise_a_helpful_error(monkeypatch):
    monkeypatch.setattr(rendering, "font_dirs", lambda: [])
    rendering._find_fonts_cached.cache_clear()
    try:
        with pytest.raises(FontNotFoundError, match="matplotlib") as info:
            find_fonts()
        assert isinstance(info.value, RuntimeError)
    finally:
        monkeypatch.undo()
        rendering._find_fonts_cached.cache_clear()
    assert find_fonts()


# ----------------------------------------------------------------------------------------------------------- style
def test_default_style_is_rdkits_default_drawing(cache):
    style = DrawingStyle()
    assert (style.line_width, style.padding, style.rotation, style.font_file) == (2, 0.05, 0.0, None)
    options = rdMolDraw2D.MolDraw2DCairo(10, 10).drawOptions()
    assert (options.bondLineWidth, options.padding) == (style.line_width, style.padding)
    for smiles in ("CC(=O)Oc1ccccc1C(=O)O", "C[C@H](N)C(=O)O", "[Na+].[Cl-]"):
        mol = cache.get(smiles)
        assert np.array_equal(render(mol), rdkit_png(mol))


@pytest.mark.parametrize("kwargs", [dict(line_width=0), dict(font_size=-1), dict(bond_length=0),
                                    dict(multiple_bond_offset=1.5), dict(padding=0.6), dict(font_file="/no/such.ttf")])
def test_style_validation(kwargs):
    with pytest.raises((ValueError, FileNotFoundError)):
        DrawingStyle(**kwargs)


def test_random_style_is_seeded_and_in_the_papers_ranges(fonts):
    assert random_style(np.random.default_rng(7)) == random_style(np.random.default_rng(7))
    rng = np.random.default_rng(0)
    styles = [random_style(rng) for _ in range(400)]
    assert {s.line_width for s in styles} == {2, 3, 4, 5}
    assert {s.font_size for s in styles} == set(range(14, 25))
    assert all(20 <= s.bond_length <= 100 for s in styles)
    assert all(0.1 <= s.multiple_bond_offset <= 0.4 for s in styles)
    assert all(0 <= s.rotation < 360 for s in styles)
    assert max(s.rotation for s in styles) > 300 and min(s.rotation for s in styles) < 60
    assert {s.font_file for s in styles} == set(fonts)
    assert {random_style(rng, fonts=fonts[:1]).font_file for _ in range(5)} == {fonts[0]}
    with pytest.raises(TypeError, match="default_rng"):
        random_style(7)
    with pytest.raises(ValueError):
        random_style(rng, fonts=[])


# ------------------------------------------------------------------------------------------------------- molecules
@pytest.mark.parametrize("name", sorted(HARD))
def test_hard_molecules_prepare_and_draw(name, cache, fonts):
    mol = cache.get(HARD[name])
    assert mol.GetNumConformers() == 1 and not mol.GetConformer().Is3D()
    style = random_style(np.random.default_rng(1), fonts)
    for image in (render(mol), render(mol, style=style), render(mol, style=style, r_groups=True),
                  render(mol, style=DrawingStyle(font_file=fonts[0]), backend="fast" if fast_backend_available() else "cairo")):
        assert image.shape == (224, 224, 3) and image.dtype == np.uint8
        assert (image < 200).any(), f"{name}: nothing drawn"  # query bonds are grey (127)


def test_prepare_keeps_2d_and_replaces_3d_coordinates():
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    assert mol.GetConformer().Is3D()
    assert not prepare_for_drawing(mol).GetConformer().Is3D()
    flat = prepare_for_drawing(Chem.MolFromSmiles("CCO"))
    again = prepare_for_drawing(flat)
    assert np.allclose(flat.GetConformer().GetPositions(), again.GetConformer().GetPositions())
    with pytest.raises(TypeError):
        prepare_for_drawing("CCO")


def test_coordinates_that_put_every_atom_on_one_point_are_replaced():
    # an SD file written without coordinates: every atom at (0, 0, 0), flagged 2D
    smiles = "c1ccccc1CCO"
    block = Chem.MolToMolBlock(Chem.MolFromSmiles(smiles)).splitlines()
    for i in range(4, 4 + 9):
        block[i] = "    0.0000    0.0000    0.0000" + block[i][30:]
    zeros = Chem.MolFromMolBlock("\n".join(block))
    assert not zeros.GetConformer().Is3D() and not zeros.GetConformer().GetPositions().any()
    prepared = prepare_for_drawing(zeros)
    assert np.ptp(prepared.GetConformer().GetPositions(), axis=0).max() > 1
    np.testing.assert_array_equal(render(prepared), render(prepare_for_drawing(Chem.MolFromSmiles(smiles))))
    assert prepare_for_drawing(Chem.MolFromSmiles("[Na+]")).GetNumAtoms() == 1  # one atom: one point is its layout


def test_coordinate_cache_reuses_evicts_and_reports_bad_input():
    cache = CoordinateCache(max_size=2)
    first = cache.get("CCO")
    assert cache.get(" CCO ") is first and cache.hits == 1 and cache.misses == 1
    cache.get("CCN")
    cache.get("CCC")  # evicts CCO, the least recently used
    assert "CCO" not in cache and "CCC" in cache and len(cache) == 2
    mol = Chem.MolFromSmiles("c1ccccc1")
    assert cache.get(mol) is cache.get(mol)
    with pytest.raises(InvalidMoleculeError) as info:
        cache.get("C1CC(", index=5)
    assert info.value.index == 5 and "C1CC(" in str(info.value)
    with pytest.raises(InvalidMoleculeError, match="not a SMILES string"):
        cache.get(42)
    with pytest.raises(InvalidMoleculeError, match="query features"):  # SMARTS is not one molecule to draw
        cache.get("C~C")
    with pytest.raises(ValueError):
        CoordinateCache(max_size=0)
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.max_size == 2 and len(clone) == 0
    assert clone.get("CCO").GetNumAtoms() == 3


# ---------------------------------------------------------------------------------------------------------- render
def test_render_shape_background_and_rgb_order(cache):
    mol = cache.get("OCCN")  # red O label, blue N label, black bonds
    for backend in ("cairo", "fast") if fast_backend_available() else ("cairo",):
        style = DrawingStyle(font_file=find_fonts()[0]) if backend == "fast" else DrawingStyle()
        image = render(mol, style=style, backend=backend).astype(int)
        assert image.shape == (224, 224, 3)
        assert (image[:5] == 255).all() and (image[:, :5] == 255).all()  # white margins
        r, g, b = image[..., 0], image[..., 1], image[..., 2]
        assert ((r > 200) & (g < 80) & (b < 80)).sum() > 10, backend  # the O label is red in channel 0
        assert ((b > 200) & (r < 80) & (g < 80)).sum() > 10, backend  # the N label is blue in channel 2
    assert render(mol, size=96).shape == (96, 96, 3)


def test_render_is_deterministic_and_styles_change_the_picture(cache, fonts):
    mol = cache.get("CC(=O)Nc1ccc(O)cc1")
    style = random_style(np.random.default_rng(3), fonts)
    assert np.array_equal(render(mol, style=style), render(mol, style=style))
    plain = render(mol)
    others = [render(mol, style=random_style(np.random.default_rng(seed), fonts)) for seed in range(4)]
    assert all(not np.array_equal(plain, o) for o in others)
    assert len({o.tobytes() for o in others}) == 4


def test_render_rejects_bad_input(cache):
    with pytest.raises(ValueError, match="prepare_for_drawing"):
        render(Chem.MolFromSmiles("CCO"))
    with pytest.raises(TypeError):
        render("CCO")
    with pytest.raises(ValueError):
        render(cache.get("CCO"), size=4)
    for unknown in ("svg", "auto"):  # "auto" (pick by what loads here) is gone: the back end is always named
        with pytest.raises(ValueError, match="drawing backend"):
            render(cache.get("CCO"), backend=unknown)
    with pytest.raises(TypeError):
        render(cache.get("CCO"), style={"line_width": 3})


@needs_fast
def test_fast_back_end_draws_the_same_lines_as_rdkits_cairo(cache, fonts):
    # Without atom labels the two back ends lay out identically: only edge antialiasing differs (the fast back end
    # uses Cairo's 4 x 4-sample rasteriser for lines).
    for smiles in ("c1ccc2ccccc2c1", "CC(C)(C)C1CCCCC1", "C1=CC=CC=C1C#CC"):
        mol = cache.get(smiles)
        style = DrawingStyle(font_file=fonts[0], line_width=3, rotation=30)
        fast, slow = render(mol, style=style, backend="fast"), render(mol, style=style, backend="cairo")
        assert np.abs(fast.astype(int) - slow).mean() < 2.0, smiles
        ink_fast, ink_slow = (fast < 128).any(-1), (slow < 128).any(-1)
        assert (ink_fast & ink_slow).sum() > 0.85 * (ink_fast | ink_slow).sum(), smiles
    # With labels, positions come from RDKit's character metrics instead of the font's: same ink, give or take.
    for smiles in ("CC(=O)Oc1ccccc1C(=O)O", "OC(=O)c1ccc(Cl)cc1N", "[Na+].[Cl-]"):
        mol = cache.get(smiles)
        style = DrawingStyle(font_file=fonts[0])
        fast, slow = render(mol, style=style, backend="fast"), render(mol, style=style, backend="cairo")
        ink_fast, ink_slow = (fast < 128).any(-1).sum(), (slow < 128).any(-1).sum()
        assert abs(ink_fast - ink_slow) < 0.25 * ink_slow, smiles
    assert fast_backend_info()["available"]


@needs_fast
def test_fast_back_end_falls_back_on_unknown_svg(cache, fonts, monkeypatch):
    mol = cache.get("CCO")
    style = DrawingStyle(font_file=fonts[0])
    before = fast_backend_info()["fallbacks"]
    monkeypatch.setattr(cairo_replay, "_SVG_PATH", cairo_replay.re.compile("(?!x)x(a)(b)"))  # sees no <path> at all
    assert np.array_equal(render(mol, style=style, backend="fast"), render(mol, style=style, backend="cairo"))
    assert fast_backend_info()["fallbacks"] == before + 1


@needs_fast
def test_hybrid_is_cairo_for_the_plain_style_and_the_replay_for_font_styles(cache, fonts):
    assert BACKENDS == ("hybrid", "cairo", "fast") and DEFAULT_BACKEND == "hybrid"
    mol = cache.get("OC(=O)c1ccc(Cl)cc1N")
    assert np.array_equal(render(mol), render(mol, backend="cairo"))
    assert not np.array_equal(render(mol, backend="fast"), render(mol, backend="cairo"))
    style = random_style(np.random.default_rng(5), fonts)
    assert np.array_equal(render(mol, style=style), render(mol, style=style, backend="fast"))
    assert not np.array_equal(render(mol, style=style), render(mol, style=style, backend="cairo"))


def test_a_back_end_that_cannot_run_fails_and_says_what_to_do(cache, fonts, monkeypatch):
    monkeypatch.setenv("MOLECLIP_FAST_RENDER", "0")
    monkeypatch.setitem(cairo_replay._CAIRO_STATE, "loaded", False)
    monkeypatch.setitem(cairo_replay._CAIRO_STATE, "lib", None)
    monkeypatch.setitem(cairo_replay._CAIRO_STATE, "reason", "")
    assert not fast_backend_available() and "MOLECLIP_FAST_RENDER" in fast_backend_info()["reason"]
    mol = cache.get("CCO")
    style = DrawingStyle(font_file=fonts[0])
    # Never a silent switch to the other rasteriser: the replay's pictures (hybrid's random styles, every "fast"
    # picture) fail, naming the setting and the way out; what RDKit's Cairo draws is unaffected.
    for backend, chosen in (("hybrid", style), ("fast", style), ("fast", DrawingStyle())):
        with pytest.raises(DrawingBackendError) as info:
            render(mol, style=chosen, backend=backend)
        message = str(info.value)
        assert f"drawing_backend={backend!r}" in message and "MOLECLIP_FAST_RENDER" in message
        assert "drawing_backend='cairo'" in message
    assert np.array_equal(render(mol), render(mol, backend="cairo"))
    assert render(mol, style=style, backend="cairo").shape == (224, 224, 3)


@needs_fast
def test_fast_back_end_is_safe_across_threads(cache, fonts):
    mols = [cache.get(s) for s in ("CCO", "c1ccccc1N", "CC(=O)Oc1ccccc1C(=O)O", "OC(=O)c1ccc(Cl)cc1")]
    styles = [random_style(np.random.default_rng(i), fonts) for i in range(len(mols))]
    expected = [render(m, style=s) for m, s in zip(mols, styles)]
    results = {}

    def work(worker):
        results[worker] = [render(m, style=s) for _ in range(5) for m, s in zip(mols, styles)]

    threads = [threading.Thread(target=work, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for images in results.values():
        assert all(np.array_equal(img, expected[i % len(mols)]) for i, img in enumerate(images))


# ------------------------------------------------------------------------------------------------------- R groups
def test_r_group_labels_follow_the_papers_numbering():
    def labels(smiles):
        mol = Chem.MolFromSmiles(smiles)
        return {mol.GetAtomWithIdx(i).GetSymbol(): label for i, label in r_group_labels(mol).items()}

    assert R_GROUP_ELEMENTS == ("C", "O", "N", "S", "F", "Cl", "Br", "I")
    assert labels("FC(Cl)(Br)I") == {"F": "R5", "Cl": "R6", "Br": "R7", "I": "R8"}
    assert labels("CS") == {"C": "R1", "S": "R4"}
    assert labels("NCCO") == {"N": "R3", "O": "R2"}
    assert labels("CC(=O)O") == {"C": "R1", "O": "R2"}  # the carbonyl O is double-bonded: kept
    assert labels("C#N") == {} and labels("c1ccccc1") == {} and labels("[Na+].[Cl-]") == {}
    assert labels("P(C)") == {"C": "R1"}  # P itself is not in the list
    acetic = Chem.MolFromSmiles("CC(=O)O")
    assert r_group_labels(acetic) == {0: "R1", 3: "R2"}


def test_r_groups_without_terminal_atoms_draw_identically(cache, fonts):
    for smiles in ("c1ccc2ccccc2c1", "C1CCNCC1", "[Na+].[Cl-]"):
        mol = cache.get(smiles)
        assert np.array_equal(render(mol, r_groups=True), render(mol))
        style = random_style(np.random.default_rng(0), fonts)
        assert np.array_equal(render(mol, style=style, r_groups=True), render(mol, style=style))


@needs_fast
def test_r_group_drawing_changes_only_the_replaced_atoms(cache, fonts):
    # Molecules whose R-labelled atoms do not set the drawing's extents, so the layout stays put (checked below)
    # and any change must come from the labels themselves.
    style = DrawingStyle(font_file=fonts[0])
    for smiles in ("CC1(ON=C(O1)c2ccccc2Cl)c3ccccn3", "CN(Cc1ccccc1)C(=S)N2CCC(=N2)c3cccc(Cl)c3"):
        mol = cache.get(smiles)
        labels = r_group_labels(mol)
        coords = atom_draw_coords(mol, style=style)
        assert labels and np.allclose(coords, atom_draw_coords(mol, style=style, r_groups=True), atol=0.05)
        plain = render(mol, style=style, backend="fast")
        replaced = render(mol, style=style, r_groups=True, backend="fast")
        changed = np.abs(plain.astype(int) - replaced).max(-1) > 40  # ignore antialiasing-level differences
        assert changed.sum() > 30
        ys, xs = np.nonzero(changed)
        centres = coords[list(labels)]
        distance = np.hypot(xs[:, None] - centres[None, :, 0], ys[:, None] - centres[None, :, 1]).min(1)
        assert distance.max() < 30, smiles
        # The labels are black like the bonds, not in the element's colour: no green Cl left.
        green = (replaced[..., 1] > 150) & (replaced[..., 0] < 100) & (replaced[..., 2] < 100)
        assert green.sum() == 0 < ((plain[..., 1] > 150) & (plain[..., 0] < 100) & (plain[..., 2] < 100)).sum()


def test_r_group_drawing_with_rdkits_drawer(cache):
    mol = cache.get("OC(=O)c1ccc(Cl)cc1")
    plain, replaced = render(mol), render(mol, r_groups=True)
    assert not np.array_equal(plain, replaced)
    green = (replaced[..., 1] > 150) & (replaced[..., 0] < 100) & (replaced[..., 2] < 100)
    assert green.sum() == 0  # Cl (green) is now a black R6


def test_layout_cache_is_bounded_by_memory_as_well_as_count():
    from moleclip.processing.rendering import BYTES_PER_ATOM_OR_BOND, CoordinateCache, estimated_bytes

    small, large = "CCO", "C" * 60  # hexacontane: 60 carbons, 122 hydrogens added only where drawing needs them
    cache = CoordinateCache(max_size=1000, max_mib=0.05)  # 52 kB: a few small molecules, not the large one beside them
    prepared = cache.get(small)
    assert estimated_bytes(prepared) == BYTES_PER_ATOM_OR_BOND * (prepared.GetNumAtoms() + prepared.GetNumBonds())
    assert cache.bytes == estimated_bytes(prepared)
    for k in range(2, 12):
        cache.get("C" * k)
    assert cache.bytes <= 0.05 * 2**20 and len(cache) < 11
    big = cache.get(large)
    assert large in cache and cache.bytes >= estimated_bytes(big)  # the newest stays even alone over the budget
    assert len(cache) == 1 and small not in cache
    cache.clear()
    assert cache.bytes == 0 and len(cache) == 0
    with pytest.raises(ValueError, match="max_mib"):
        CoordinateCache(max_mib=0)
