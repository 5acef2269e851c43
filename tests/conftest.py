"""Shared test helpers: offline mode, and the shared data directory.

No test fetches anything from the Hugging Face Hub: HF_HUB_OFFLINE and HF_DATASETS_OFFLINE default to 1 here (set
before huggingface_hub is imported, which reads them once), so a plain `python -m pytest` runs as CI does.

Tests that read the real datasets carry the `data` marker and take the `data_dir` fixture. The data directory is
$MOLECLIP_DATA_DIR when set, else `shared/data` beside the checkout (`<checkout>/../shared/data`), the package's own
default (`moleclip.processing.property_data.resolve_data_dir`). When neither exists those tests are skipped, and the
end of the run lists them.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from moleclip.processing.property_data import DATA_DIR_ENV, default_data_dir  # noqa: E402

_DATA_SKIP_REASON = (f"shared data not found: set {DATA_DIR_ENV} or put the data folder at {default_data_dir()}"
                     + (f" ({DATA_DIR_ENV}={os.environ[DATA_DIR_ENV]} is not a folder)"
                        if os.environ.get(DATA_DIR_ENV) and not Path(os.environ[DATA_DIR_ENV]).expanduser().is_dir()
                        else ""))


def _find_data_dir() -> Path | None:
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_dir() else None
    default = default_data_dir()
    return default if default.is_dir() else None


def pytest_configure(config):
    # Tests (and the subprocesses they start) that look at the variable see the default too.
    data_dir = _find_data_dir()
    if data_dir is not None and not os.environ.get(DATA_DIR_ENV):
        os.environ[DATA_DIR_ENV] = str(data_dir)
    config._moleclip_data_dir = data_dir


def pytest_collection_modifyitems(config, items):
    if config._moleclip_data_dir is not None:
        return
    skip = pytest.mark.skip(reason=_DATA_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("data") is not None:
            item.add_marker(skip)


def _skipped_for_data(report) -> bool:
    if "data" in getattr(report, "keywords", {}):  # a module skipped at collection has no keywords
        return True
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3 else ""
    return DATA_DIR_ENV in str(reason) or "shared data" in str(reason)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if _skipped_for_data(r)]
    if not skipped:
        return
    terminalreporter.section(f"{len(skipped)} test(s) skipped for missing shared data")
    for report in skipped:
        terminalreporter.line(f"  {report.nodeid}")
    terminalreporter.line(f"  ({_DATA_SKIP_REASON})")


@pytest.fixture(scope="session")
def data_dir(pytestconfig) -> Path:
    """The shared data directory (tests using it also carry @pytest.mark.data, which skips them without it)."""
    if pytestconfig._moleclip_data_dir is None:
        pytest.skip(_DATA_SKIP_REASON)
    return pytestconfig._moleclip_data_dir


def _go_offline(monkeypatch, cache_dir):
    """Offline mode with an empty Hub cache, inside this process.

    huggingface_hub reads HF_HUB_OFFLINE and the cache location once, at import, so setting the environment variable
    alone would leave the already-imported library trying the network (and waiting on timeouts).
    """
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache_dir))


@pytest.fixture()
def go_offline():
    return _go_offline
