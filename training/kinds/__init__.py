"""Model kinds behind one interface (`base.ModelKind`) and their registry; see `base.py`.

Importing this package registers the kinds the package ships, in the order the registry asks them whether they
recognise a folder: the baselines by their own settings file, then MoleCLIP by its config.json.
"""

from moleclip.training.kinds.base import KINDS, ModelKind, Outputs, Prepared, kind_of_folder, load_kind, register_kind
from moleclip.training.kinds.fingerprint import FingerprintKind
from moleclip.training.kinds.forest import ForestKind
from moleclip.training.kinds.svm import SVMKind
from moleclip.training.kinds.image import ImageKind  # last: it recognises any config.json

__all__ = ["KINDS", "FingerprintKind", "ForestKind", "ImageKind", "ModelKind", "Outputs", "Prepared", "SVMKind",
           "kind_of_folder", "load_kind", "register_kind"]
