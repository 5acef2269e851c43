"""Shared test helpers."""

import pytest


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
