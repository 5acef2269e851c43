"""A Hugging Face Space for a finetuned MoleCLIP model: the page of `moleclip app`, built by the same function.

To make a Space (SDK: gradio) for a model repository:

* save this file as the Space's ``app.py``;
* put ``moleclip[app]`` in its ``requirements.txt``;
* name the model in the Space's settings: the variable ``MOLECLIP_MODEL`` = the model repository (``lab/moleclip-esol``)
  or a folder inside the Space. A private model repository also needs the secret ``HF_TOKEN``.

Run by hand, it takes the model as an argument instead: ``python space_app.py runs/esol/model``. The Space runner
starts ``app.py`` as a script, so importing this module builds nothing.
"""

from __future__ import annotations

import os
import sys

from moleclip.training.serving.app import MODEL_ENV, build_app


def model_spec(argv: list[str] | None = None) -> str:
    """The model to serve: the first argument, else $MOLECLIP_MODEL."""
    argv = sys.argv[1:] if argv is None else argv
    spec = argv[0] if argv else os.environ.get(MODEL_ENV, "").strip()
    if not spec:
        raise SystemExit(f"name the model to serve: set {MODEL_ENV} (a Space variable) to a model folder or Hub "
                         "repository, or pass it as the first argument")
    return spec


def main(argv: list[str] | None = None) -> None:
    # A Space routes its public address to port 7860 on 0.0.0.0 (its GRADIO_SERVER_NAME/PORT), which gradio's
    # launch reads from the environment; locally the same defaults serve http://127.0.0.1:7860.
    build_app(model_spec(argv)).launch()


if __name__ == "__main__":
    main()
