"""Model card templates for checkpoints written by MoleCLIP (installed as `moleclip.model_cards`).

`render_model_card(kind, **context)` fills `<kind>.md` with `string.Template` (`$name` placeholders), so there is
no templating dependency. A value nobody supplied renders as "n/a" rather than failing a save at the end of a long run.
"""

import string
from collections import defaultdict
from importlib import resources

__all__ = ["render_model_card", "CARD_KINDS"]

CARD_KINDS = ("encoder", "property", "baseline")  # baseline: a fingerprint MLP or random forest folder
# Placeholders that stand for whole optional blocks (YAML lines): absent means empty, not "n/a".
_OPTIONAL_BLOCKS = ("extra_tags", "model_index")


def render_model_card(kind: str, **context) -> str:
    if kind not in CARD_KINDS:
        raise ValueError(f"unknown model card kind {kind!r}; choose one of {CARD_KINDS}")
    text = resources.files(__name__).joinpath(f"{kind}.md").read_text(encoding="utf-8")
    values = defaultdict(lambda: "n/a", {name: "" for name in _OPTIONAL_BLOCKS})
    values.update({k: ("n/a" if v is None else str(v)) for k, v in context.items()})
    return string.Template(text).substitute(values)
