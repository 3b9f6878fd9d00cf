"""zoo.load of a hub model without a network: lfmlab's own message within seconds, no retries;
with a network (simulated), the ordinary from_pretrained download path."""
from __future__ import annotations

import lfmlab  # noqa: F401

# isort: split
import socket
import time

import pytest

from lfmlab import zoo
from lfmlab.zoo import hub


def test_reachable_is_false_for_a_closed_port_and_true_for_a_listening_one():
    start = time.perf_counter()
    assert not hub.reachable(1.0, endpoint="http://127.0.0.1:9")       # nothing listens on port 9
    assert time.perf_counter() - start < 1.5
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert hub.reachable(1.0, endpoint=f"http://127.0.0.1:{server.getsockname()[1]}")


def test_a_name_that_never_resolves_is_unreachable_within_the_timeout():
    start = time.perf_counter()
    assert not hub.reachable(0.5, endpoint="https://lfmlab-no-such-host.invalid")
    assert time.perf_counter() - start < 1.0


@pytest.fixture
def online_env(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def pretrained(name, **kwargs):
        calls.append(kwargs)
        if kwargs.get("local_files_only"):
            raise OSError(f"{name} is not in the cache")
        tok = zoo.load("world-lm", device="cpu").tokenizer
        return tok, hub.random_model("gpt2")

    monkeypatch.setattr(hub, "_pretrained", pretrained)
    return calls


def test_without_a_network_it_fails_fast_with_its_own_message(online_env, monkeypatch, capfd):
    monkeypatch.setattr(hub, "reachable", lambda timeout=2.0: False)
    start = time.perf_counter()
    with pytest.raises(OSError, match="could not be reached") as err:
        zoo.load("gpt2")
    assert time.perf_counter() - start < 5
    assert "world-lm" in str(err.value)
    assert online_env == [{"local_files_only": True}]            # the cache only: no download tried
    out = capfd.readouterr()
    assert "Retry" not in out.out + out.err


def test_with_a_network_it_downloads_as_from_pretrained_does(online_env, monkeypatch):
    monkeypatch.setattr(hub, "reachable", lambda timeout=2.0: True)
    model, tokenizer, card = hub.load("gpt2")
    assert online_env == [{"local_files_only": True}, {}]         # cache first, then the download
    assert card.source == "hub" and tokenizer.pad_token is not None


def test_hub_offline_setting_is_named_in_the_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE is set"):
        hub.load("gpt2")


def test_a_real_load_without_a_network_ends_within_seconds(monkeypatch, capfd):
    """The real path, no stubs: in this offline sandbox and CI the hub is unreachable (skip if it
    answers: then the download would start)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if hub.reachable(2.0):
        pytest.skip("the hub answers from here: a real load would download gpt2")
    start = time.perf_counter()
    with pytest.raises(OSError, match="Could not load hub model 'gpt2'"):
        zoo.load("gpt2")
    assert time.perf_counter() - start < 10
    out = capfd.readouterr()
    assert "Retry" not in out.out + out.err
