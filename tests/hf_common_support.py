"""Load the `transformers` library's own common model tests from an extracted sdist.

The released sdist ships `tests/test_modeling_common.py` (the `ModelTesterMixin` suite) and
`tests/test_configuration_common.py` (`ConfigTester`), but not three modules they import:

* `tests/exporters/test_export.py` (`ExportTesterMixin`, a base class of `ModelTesterMixin` holding the
  Dynamo/ONNX/OpenVINO/ExecuTorch export tests),
* `tests/generation/test_utils.py` (`GenerationTesterMixin`, only used in an `issubclass` check that a tester which
  inherits it can generate: MoleCLIP cannot, so it must not inherit it),
* `tests/utils/test_configuration_utils.py` (`config_common_kwargs`, only read for configs without sub-configs;
  MoleCLIP's config has one).

Where a module is missing we register an empty stand-in under the same name, so the rest of the suite runs
unchanged; where it exists (a git checkout of the transformers repository) the real module is used. The export
tests lost this way are replaced by `test_torch_export_matches_eager` in `test_hf_common.py`.

`tests/test_image_processing_common.py` (`ImageProcessingTestMixin`) imports `url_to_local_path` from the repository's
`utils/fetch_hub_objects_for_ci.py`, which is not in the sdist either; it only maps test-image URLs to a CI cache, for
the tests that download pictures (backend equivalence on a COCO photo, which needs two backends and is skipped for
MoleCLIP). Its stand-in returns the URL unchanged.

The sdist's folder is a package called `tests`, like ours: it is imported under another name
(`transformers_common_tests`) so neither shadows the other.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import warnings
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ENV_VAR", "PACKAGE", "CommonTests", "find_tests_dir", "load_common_tests", "load_image_processing_tests"]

ENV_VAR = "TRANSFORMERS_TESTS_DIR"
PACKAGE = "transformers_common_tests"

# module path inside the tests package -> (attribute, value) of the empty stand-in
_STAND_INS = {
    "exporters.test_export": ("ExportTesterMixin", lambda: type("ExportTesterMixin", (), {})),
    "generation.test_utils": ("GenerationTesterMixin", lambda: type("GenerationTesterMixin", (), {})),
    "utils.test_configuration_utils": ("config_common_kwargs", dict),
}


class CommonTests(types.SimpleNamespace):
    """The two imported modules (`modeling`, `configuration`) and the names of the stand-ins that were used."""

    modeling: types.ModuleType
    configuration: types.ModuleType
    stand_ins: tuple[str, ...]


def find_tests_dir() -> tuple[Path | None, str]:
    """The tests folder named by ``$TRANSFORMERS_TESTS_DIR``, or ``(None, why it cannot be used)``."""
    value = os.environ.get(ENV_VAR)
    if not value:
        return None, (
            f"{ENV_VAR} is not set: point it at the tests/ folder of the transformers sdist "
            "(scripts/get_transformers_tests.sh downloads it and prints the path)"
        )
    path = Path(value).expanduser()
    if not (path / "test_modeling_common.py").is_file():
        return None, f"{ENV_VAR}={value} has no test_modeling_common.py (expected the sdist's tests/ folder)"
    return path.resolve(), ""


def _register_package(name: str, location: Path) -> types.ModuleType:
    package = types.ModuleType(name)
    package.__path__ = [str(location)]
    package.__package__ = name
    sys.modules[name] = package
    return package


def _install_stand_ins(tests_dir: Path) -> tuple[str, ...]:
    used = []
    for dotted, (attribute, make) in _STAND_INS.items():
        if (tests_dir / (dotted.replace(".", "/") + ".py")).is_file():
            continue
        parent, _, leaf = dotted.rpartition(".")
        parent_name = f"{PACKAGE}.{parent}"
        if parent_name not in sys.modules:
            # Keeps the real folder on the path in case it exists with other modules in it.
            _register_package(parent_name, tests_dir / parent)
        module = types.ModuleType(f"{PACKAGE}.{dotted}")
        module.__doc__ = f"Stand-in: {dotted}.py is not in the transformers sdist."
        setattr(module, attribute, make())
        sys.modules[module.__name__] = module
        setattr(sys.modules[parent_name], leaf, module)
        used.append(dotted)
    return tuple(used)


@contextmanager
def _no_direct_transformers_import(tests_dir: Path):
    """`test_configuration_common` calls `direct_transformers_import(<tests dir>)` at import time, which executes
    `<tests dir>/__init__.py` and returns the already-imported `transformers`. The sdist has no `__init__.py`, so
    hand back the installed `transformers` directly (the value is unused by the config tests)."""
    import transformers.utils

    if (tests_dir / "__init__.py").is_file():
        yield
        return
    original = transformers.utils.direct_transformers_import
    transformers.utils.direct_transformers_import = lambda *args, **kwargs: sys.modules["transformers"]
    try:
        yield
    finally:
        transformers.utils.direct_transformers_import = original


def load_common_tests(tests_dir: Path) -> CommonTests:
    """Import ``test_modeling_common`` and ``test_configuration_common`` from ``tests_dir`` (idempotent)."""
    tests_dir = Path(tests_dir).resolve()
    existing = sys.modules.get(PACKAGE)
    if existing is not None and list(existing.__path__) != [str(tests_dir)]:
        raise RuntimeError(f"{PACKAGE} is already loaded from {existing.__path__[0]}, not {tests_dir}")
    if existing is None:
        _register_package(PACKAGE, tests_dir)
        stand_ins = _install_stand_ins(tests_dir)
        sys.modules[PACKAGE].stand_ins = stand_ins
    try:
        with warnings.catch_warnings():
            # The suite marks tests with markers (flash_attn_test, torch_compile_test...) that transformers registers
            # in its own conftest.py, which the sdist does not ship; they only select tests on GPU machines.
            warnings.filterwarnings("ignore", message=r"Unknown pytest\.mark\.")
            modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
            with _no_direct_transformers_import(tests_dir):
                configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] in (PACKAGE, "transformers"):
            raise
        raise ModuleNotFoundError(
            f"the transformers common tests in {tests_dir} need {error.name!r}: pip install -e '.[test]'",
            name=error.name,
        ) from error
    return CommonTests(modeling=modeling, configuration=configuration, stand_ins=sys.modules[PACKAGE].stand_ins)


def load_image_processing_tests(tests_dir: Path) -> types.ModuleType:
    """Import ``test_image_processing_common`` (``ImageProcessingTestMixin``, ``ImageProcessingTester``) from
    ``tests_dir``, after :func:`load_common_tests` (idempotent)."""
    load_common_tests(tests_dir)
    helper = Path(tests_dir).resolve().parent / "utils" / "fetch_hub_objects_for_ci.py"
    if not helper.is_file() and "fetch_hub_objects_for_ci" not in sys.modules:
        module = types.ModuleType("fetch_hub_objects_for_ci")
        module.__doc__ = "Stand-in: utils/fetch_hub_objects_for_ci.py is not in the transformers sdist."
        module.url_to_local_path = lambda url, *args, **kwargs: url
        sys.modules[module.__name__] = module
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Unknown pytest\.mark\.")
        return importlib.import_module(f"{PACKAGE}.test_image_processing_common")
