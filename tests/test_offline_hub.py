"""Offline is fast and quiet: built-in presets never ask the Hub, and a Hub id with no network
answers "not reachable" within 2 s, in one line, without huggingface_hub's retry log."""
from __future__ import annotations

import socket
import time

import pytest

from hybench.engine import hub, resolve_model
from hybench.engine.errors import EngineConfigError
from hybench.orchestrator.cli import main


@pytest.fixture
def closed_hub(monkeypatch):
    """The Hub endpoint is a loopback port nothing listens on: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub._endpoint_accepts.cache_clear()
    yield
    hub._endpoint_accepts.cache_clear()


def test_data_with_the_tiny_preset_never_asks_the_hub(tmp_path, monkeypatch, capfd):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("the Hub was asked for a built-in preset")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.setattr(hub, "_endpoint_accepts", refuse)
    out = tmp_path / "p.json"
    assert main(["data", "--tokenizer", "tiny-llama", "--input-lengths", "8", "--num-prompts", "2",
                 "--output-file", str(out)]) == 0
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "built-in preset without a tokenizer" in err and out.exists()


def test_a_hub_tokenizer_offline_falls_back_fast_and_quietly(tmp_path, closed_hub, capfd):
    import transformers  # noqa: F401 - imported before the clock starts: only the Hub's part is timed

    began = time.monotonic()
    assert main(["data", "--tokenizer", "someorg/no-such-tokenizer", "--input-lengths", "8", "--num-prompts", "2",
                 "--output-file", str(tmp_path / "p.json")]) == 0
    assert time.monotonic() - began < 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "someorg/no-such-tokenizer is not reachable" in err and "Retry" not in err


def test_a_hub_model_offline_fails_fast_and_quietly(closed_hub, capfd):
    import huggingface_hub  # noqa: F401

    began = time.monotonic()
    with pytest.raises(EngineConfigError, match="not reachable on the Hugging Face Hub"):
        resolve_model("someorg/no-such-model")
    assert time.monotonic() - began < 2
    assert "Retry" not in capfd.readouterr().err
