"""weights='auto' against a local stand-in hub (tests/hubserver.py): real sockets, real huggingface_hub, no mocks.
The download, the cache afterwards, the proxy variables, an endpoint that never answers, a refused port,
a repo without the files; and runtime.host_reachable through a proxy."""

from __future__ import annotations

import time

import pytest
import timm
import torch
from hubserver import (
    PROXY_VARS,
    ForwardingProxy,
    HubServer,
    point_hub_at,
    refused_url,
    reset_hub_session,
    silent_endpoint,
)
from safetensors.torch import save

from tresnet_nb.model.hub import fetch_pretrained
from tresnet_nb.model.load import WeightsUnavailableError, load_model, weights_info
from tresnet_nb.runtime import first_hop, host_reachable

REPO = "timm/tresnet_m.miil_in21k_ft_in1k"  # what timm's pretrained cfg names for tresnet_m's default tag
X = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference():
    """A real tresnet_m (random weights, seed 0) and its state dict as a safetensors file's bytes."""
    torch.manual_seed(0)
    model = timm.create_model("tresnet_m", num_classes=1000).eval()
    return model, save({k: v.contiguous() for k, v in model.state_dict().items()})


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty HF cache and no proxy variables; returns a function that points HF_ENDPOINT at a URL."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for var in [*PROXY_VARS, "HF_HUB_OFFLINE", "HF_HUB_ETAG_TIMEOUT"]:
        monkeypatch.delenv(var, raising=False)
    reset_hub_session()

    yield lambda url: point_hub_at(monkeypatch, url)
    reset_hub_session()  # the next session reads the environment that monkeypatch restores


def _logits(model):
    with torch.no_grad():
        return model.eval()(X)


def test_auto_downloads_from_the_hub_then_loads_from_the_cache(hub, reference):
    model, weights = reference
    with HubServer({REPO: {"model.safetensors": weights}}) as server:
        hub(server.url)
        first = load_model("tresnet_m", weights="auto")
    assert ("GET", f"/{REPO}/resolve/main/model.safetensors") in server.seen
    info = weights_info(first)
    assert (info.pretrained, info.source, info.tag, info.head) == (True, "hub", "miil_in21k_ft_in1k", "pretrained")
    assert torch.equal(_logits(first), _logits(model))

    second = load_model("tresnet_m", weights="auto")  # the server is closed now
    assert (weights_info(second).pretrained, weights_info(second).source) == (True, "hf-cache")
    assert torch.equal(_logits(second), _logits(model))


def test_the_hub_is_asked_through_the_proxy_variable(hub, reference, monkeypatch):
    _, weights = reference
    endpoint = refused_url()  # only the proxy can reach it: a direct connection test would say 'offline'
    with HubServer({REPO: {"model.safetensors": weights}}) as server:
        with ForwardingProxy({endpoint.removeprefix("http://"): server.url.removeprefix("http://")}) as proxy:
            hub(endpoint)
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            reset_hub_session()
            path, source = fetch_pretrained("tresnet_m", "miil_in21k_ft_in1k")
    assert source == "hub" and path.read_bytes() == weights
    url = f"{endpoint}/{REPO}/resolve/main/model.safetensors"
    assert ("HEAD", url) in proxy.seen and ("GET", url) in proxy.seen
    assert len(server.seen) == len(proxy.seen)  # nothing reached the hub but through the proxy


def test_auto_through_a_dead_proxy_falls_back_and_names_the_proxy(hub, monkeypatch):
    hub("http://hub.invalid")  # never resolved: the proxy is the first hop
    dead = refused_url()
    monkeypatch.setenv("HTTP_PROXY", dead)
    reset_hub_session()
    start = time.monotonic()
    with pytest.warns(UserWarning, match="RANDOM initialisation"):
        model = load_model("tresnet_m", weights="auto", num_classes=3)
    assert time.monotonic() - start < 10
    note = weights_info(model).note
    assert "http://hub.invalid cannot be reached" in note and f"HTTP_PROXY={dead}" in note and "Fix, either" in note


def test_a_proxy_that_cannot_reach_the_hub_is_named_with_its_answer(hub, monkeypatch):
    endpoint = refused_url()
    with ForwardingProxy() as proxy:  # it answers 502, as a proxy does when its upstream refuses
        hub(endpoint)
        monkeypatch.setenv("http_proxy", proxy.url)
        reset_hub_session()
        start = time.monotonic()
        with pytest.raises(WeightsUnavailableError) as err:
            fetch_pretrained("tresnet_m", "miil_in21k_ft_in1k")
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert f"answered through the proxy http_proxy={proxy.url} HTTP 502" in message and "Fix, either" in message
    assert ("HEAD", f"{endpoint}/{REPO}/resolve/main/model.safetensors") in proxy.seen


def test_an_endpoint_that_never_answers_fails_within_seconds(hub):
    with silent_endpoint() as endpoint:
        hub(endpoint)
        start = time.monotonic()
        with pytest.raises(WeightsUnavailableError) as err:
            fetch_pretrained("tresnet_m", "miil_in21k_ft_in1k")
        elapsed = time.monotonic() - start
    assert elapsed < 10, elapsed
    message = str(err.value)
    assert f"{endpoint} cannot be reached" in message and "timeout 3 s" in message and "Fix, either" in message


def test_a_refused_port_fails_at_once(hub):
    endpoint = refused_url()
    hub(endpoint)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        fetch_pretrained("tresnet_m", "miil_in21k_ft_in1k")
    assert time.monotonic() - start < 2.5
    message = str(err.value)
    assert f"{endpoint} cannot be reached" in message and "Fix, either" in message and REPO in message


@pytest.mark.parametrize(
    ("repos", "says"),
    [({REPO: {}}, f"the hub repo {REPO} at"), ({}, "answered HTTP 404 (RepositoryNotFoundError")],
    ids=["repo-without-the-files", "no-such-repo"],
)
def test_a_repo_without_the_files_names_the_repo(hub, repos, says):
    with HubServer(repos) as server:
        hub(server.url)
        with pytest.raises(WeightsUnavailableError) as err:
            fetch_pretrained("tresnet_m", "miil_in21k_ft_in1k")
    message = str(err.value)
    assert says in message and REPO in message and server.url in message and "Fix, either" in message


def test_host_reachable_connects_to_the_proxy_urllib_would_use(monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    target = refused_url()
    assert host_reachable(target) is False
    with ForwardingProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        assert first_hop(target) == ("127.0.0.1", proxy.server_address[1])
        assert host_reachable(target) is True  # the data downloads (urllib) go through this proxy too
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert first_hop(target) == ("127.0.0.1", int(target.rsplit(":", 1)[1]))
        assert host_reachable(target) is False
