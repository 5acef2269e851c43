"""The finetuning figures read as they would in a paper: nothing cut off, axes that name what they show."""

import numpy as np
import pytest

from moleclip_cli.main import main as cli
from moleclip.training.evaluation import plots

LONG_TITLE = ("y_solubility_measured_in_the_laboratory, head_lr=0.0004, encoder_lr=5e-06, augmentation=default, "
              "seed 2: test part")
LONG_TARGET = "measured aqueous solubility at 25 C in log10(mol/L), Delaney 2004"


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions would save, laid out as saving lays them out, instead of the files."""
    kept = []

    def keep(fig, path):
        fig.canvas.draw()
        kept.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return kept


def _flat(text: str) -> str:
    return "".join(text.split())


def _inside(fig, artist) -> bool:
    box = artist.get_window_extent(fig.canvas.get_renderer())
    return (box.x0 >= fig.bbox.x0 - 0.5 and box.x1 <= fig.bbox.x1 + 0.5 and box.y0 >= fig.bbox.y0 - 0.5
            and box.y1 <= fig.bbox.y1 + 0.5)


def _texts(fig):
    for ax in fig.axes:
        if ax.axison:
            yield from (ax.title, ax.xaxis.label, ax.yaxis.label)


def test_fit_text_breaks_at_word_ends_and_keeps_every_character():
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(3, 2), dpi=100)
    title = plots.fit_text(fig.suptitle(LONG_TARGET), 200)
    assert "\n" in title.get_text() and _flat(title.get_text()) == _flat(LONG_TARGET)
    assert title.get_window_extent(fig.canvas.get_renderer()).width <= 200
    plt.close(fig)


@pytest.mark.parametrize("n_targets", [1, 4, 12])
def test_parity_plot_title_and_labels_fit_and_name_the_target(figures, tmp_path, n_targets):
    rng = np.random.default_rng(0)
    names = [f"{LONG_TARGET} {j}" for j in range(n_targets)]
    truth = rng.normal(size=(30, n_targets))
    plots.parity_plot(truth, truth + rng.normal(scale=0.3, size=truth.shape), tmp_path / "p.png", names,
                      title=LONG_TITLE, units={names[0]: "log mol/L"})
    fig = figures[0]
    assert _flat(fig._suptitle.get_text()) == _flat(LONG_TITLE) and _inside(fig, fig._suptitle)
    for text in _texts(fig):
        assert _inside(fig, text), text.get_text()
    first = fig.axes[0]
    assert _flat(first.get_xlabel()) == _flat(f"measured {names[0]} (log mol/L)")
    assert _flat(first.get_ylabel()) == _flat(f"predicted {names[0]} (log mol/L)")
    if n_targets > 1:  # a unit only where one is given
        assert _flat(fig.axes[1].get_xlabel()) == _flat(f"measured {names[1]}")
        assert _flat(fig.axes[1].get_title()) == _flat(names[1])


def test_roc_plot_titles_each_panel_with_its_target(figures, tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=(40, 3)).astype(float)
    names = ["NR-AR", "SR-p53", LONG_TARGET]
    plots.roc_plot(labels, rng.random((40, 3)), tmp_path / "r.png", names, title=LONG_TITLE)
    fig = figures[0]
    assert _flat(fig._suptitle.get_text()) == _flat(LONG_TITLE) and _inside(fig, fig._suptitle)
    assert [_flat(ax.get_title()) for ax in fig.axes] == [_flat(f"{n} (positive: 1)") for n in names]
    assert all(_inside(fig, text) for text in _texts(fig))


def _metrics_csv(path, epochs=5):
    rows = ["step,epoch,loss,valid_loss,valid_mae,test_loss,test_mae"]
    for epoch in range(epochs):
        rows.append(f"{epoch + 1},{epoch},{1 / (epoch + 1)},,,,")
        scores = [1.1, 2.0, 1.2, 2.1]  # validation loss and MAE, test loss and MAE, falling as 1/epoch
        rows.append(f"{epoch + 1},{epoch + 1},," + ",".join(str(v / (epoch + 1)) for v in scores))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_learning_curves_name_loss_metric_unit_and_count_whole_epochs(figures, tmp_path):
    plots.learning_curves(_metrics_csv(tmp_path / "m.csv"), tmp_path / "l.png", metric="mae", best_epoch=3,
                          title=LONG_TITLE, loss="L1, standardised targets", unit="log mol/L")
    fig = figures[0]
    loss, metric = fig.axes
    assert _flat(fig._suptitle.get_text()) == _flat(LONG_TITLE) and _inside(fig, fig._suptitle)
    assert loss.get_ylabel() == "loss (L1, standardised targets)" and metric.get_ylabel() == "MAE (log mol/L)"
    ticks = [t for t in loss.get_xticks() if loss.get_xlim()[0] <= t <= loss.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert all(_inside(fig, text) for text in _texts(fig))


def test_learning_curves_say_the_metric_is_a_mean_over_targets(figures, tmp_path):
    plots.learning_curves(_metrics_csv(tmp_path / "m.csv"), tmp_path / "l.png", metric="mae", n_targets=4, unit="e")
    assert figures[0].axes[1].get_ylabel() == "MAE, mean over 4 targets (e)"


@pytest.mark.data
def test_finetune_plots_carry_the_named_sets_unit(figures, tmp_path, data_dir):
    """esol's unit reaches the parity plot's axes and the learning curves' metric through the data set registry."""
    assert cli(["finetune", "--dataset", "esol", "--data-dir", str(data_dir), "--limit", "60", "--model", "tiny",
                "--freeze-encoder", "--seeds", "1", "--epochs", "2", "--head-lr", "1e-3", "--augmentation", "none",
                "--batch-size", "16", "--no-progress", "--output-dir", str(tmp_path / "run")]) == 0
    parity, curves = figures
    assert _flat(parity.axes[0].get_xlabel()) == _flat("measured log_solubility (log mol/L)")
    assert _flat(parity._suptitle.get_text()).endswith("seed1:testpart")
    assert curves.axes[0].get_ylabel() == "loss (L1, standardised targets)"
    assert curves.axes[1].get_ylabel() == "RMSE (log mol/L)"
