"""`moleclip render`: the options it is given act, also over a --model checkpoint's saved processor."""

from PIL import Image

from moleclip import MoleCLIPImageProcessor
from moleclip_cli.main import main


def test_size_acts_with_and_without_a_model_processor(tmp_path):
    model = tmp_path / "model"
    MoleCLIPImageProcessor(size=96).save_pretrained(model)
    png = tmp_path / "x.png"
    assert main(["render", "CCO", "--model", str(model), "--output", str(png)]) == 0
    assert Image.open(png).size == (96, 96)  # the checkpoint's own size
    assert main(["render", "CCO", "--model", str(model), "--size", "64", "--output", str(png)]) == 0
    assert Image.open(png).size == (64, 64)
    assert main(["render", "CCO", "--size", "48", "--output", str(png)]) == 0
    assert Image.open(png).size == (48, 48)
    assert main(["render", "CCO", "--output", str(png)]) == 0
    assert Image.open(png).size == (224, 224)
