"""Pretrained weights from the Hugging Face hub: the local cache first, then the hub when it answers; a machine
without internet gets, within seconds, an error that says which file to put where.

Whether the hub answers is asked of the hub itself, through huggingface_hub's own HTTP session, so that its proxy
settings (HTTPS_PROXY, HTTP_PROXY, NO_PROXY; ``configure_http_backend`` / ``set_client_factory``) hold as they will
for the download (a direct TCP test behind a proxy said 'offline' and runs trained from random weights).
The question is one HEAD request without retries: huggingface_hub's own metadata call retries connection errors
with back-off (0.2x from about 0.25 on; 1.x and 2.x once more with a 60 s timeout), which takes half a minute.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub repos hold, safest first
HUB_TIMEOUT_S = 3.0  # connect and read timeout of the question to the hub; HF_HUB_ETAG_TIMEOUT, when set, wins
DNS_GRACE_S = 1.5  # name resolution is outside the HTTP clients' timeouts: the question gets this much longer
# The base class of connection, timeout and proxy errors of each HTTP client huggingface_hub has used:
# requests (0.x), httpx (1.x), httpx2 (2.x). Looked up among the imported modules, so none is imported for it.
TRANSPORT_ERRORS = {"requests": "RequestException", "httpx": "TransportError", "httpx2": "TransportError"}
PROXY_VARS = {  # what requests and httpx read for an endpoint of each scheme
    "https": ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"),
    "http": ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"),
}


class WeightsUnavailableError(RuntimeError):
    """Requested pretrained weights are neither cached nor downloadable from here."""


def _offline_flag() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_timeout() -> float:
    """Seconds the hub has to answer: HF_HUB_ETAG_TIMEOUT when set (huggingface_hub honours it too), else 3."""
    value = os.environ.get("HF_HUB_ETAG_TIMEOUT", "")
    try:
        return float(value) if value else HUB_TIMEOUT_S
    except ValueError:
        raise ValueError(
            f"HF_HUB_ETAG_TIMEOUT={value!r} is not a number of seconds; set it to e.g. 10, or unset it"
        ) from None


def proxy_note(endpoint: str) -> str:
    """' through the proxy NAME=host:port' for the proxy variables set for ``endpoint``'s scheme, else ''."""
    scheme = urlparse(endpoint).scheme
    hops = []
    for var in PROXY_VARS.get(scheme, ()):
        if os.environ.get(var):
            proxy = urlparse(os.environ[var] if "://" in os.environ[var] else f"http://{os.environ[var]}")
            hops.append(f"{var}={proxy.scheme}://{proxy.hostname}:{proxy.port or ''}".rstrip(":"))  # no credentials
    return f" through the proxy {', '.join(hops)}" if hops else ""


def _transport_errors() -> tuple[type[BaseException], ...]:
    return tuple(getattr(sys.modules[mod], cls) for mod, cls in TRANSPORT_ERRORS.items() if mod in sys.modules)


def _head(url: str, timeout: float) -> tuple[Any, BaseException | None]:
    """(response, None) or (None, error) of one HEAD of ``url`` with huggingface_hub's session, in a daemon thread
    that the caller waits ``timeout + DNS_GRACE_S`` for (a hanging resolver cannot hold it longer)."""
    from huggingface_hub.utils import build_hf_headers, get_session

    outcome: list[Any] = []

    def ask() -> None:
        try:
            session = get_session()
            # requests' Session.head takes allow_redirects, httpx's Client.head follow_redirects; a redirect (to a
            # CDN, or for a renamed repo) is an answer from the hub already
            follow = "follow_redirects" if hasattr(session, "follow_redirects") else "allow_redirects"
            headers = {**build_hf_headers(), "Accept-Encoding": "identity"}  # 2.x may ask the hub here too
            outcome.append(session.head(url, headers=headers, timeout=timeout, **{follow: False}))
        except Exception as err:  # handed to the caller, which raises what is not a connection error
            outcome.append(err)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout + DNS_GRACE_S)
    if not outcome:
        return None, TimeoutError(f"no answer within {timeout + DNS_GRACE_S:.1f} s")
    if isinstance(outcome[0], _transport_errors()):
        return None, outcome[0]
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0], None


def _cause(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else 'no message'}"


def _ask_hub(url: str, endpoint: str, timeout: float) -> tuple[bool, str | None]:
    """(True, None) if the hub has the file at ``url``, (False, None) if it says the file is not there, else (False,
    why it cannot be had from here: no connection, a timeout, the proxy, an HTTP error, an answer not from a hub)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, hf_raise_for_status

    response, error = _head(url, timeout)
    if error is not None:
        return False, f"{endpoint} cannot be reached{proxy_note(endpoint)} ({_cause(error)}; timeout {timeout:g} s)"
    try:
        hf_raise_for_status(response)
    except EntryNotFoundError:
        return False, None
    except HfHubHTTPError as err:
        return False, f"{url} answered{proxy_note(endpoint)} HTTP {response.status_code} ({_cause(err)})"
    if response.status_code < 300 and constants.HUGGINGFACE_HEADER_X_REPO_COMMIT not in response.headers:
        return False, (
            f"{url} answered{proxy_note(endpoint)} HTTP {response.status_code} without the hub's "
            f"{constants.HUGGINGFACE_HEADER_X_REPO_COMMIT} header (a proxy's or a captive portal's page, or an "
            f"HF_ENDPOINT that is not a hub)"
        )
    return True, None


def _unavailable(name: str, tag: str, repo: str, why: str) -> WeightsUnavailableError:
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    return WeightsUnavailableError(
        f"Weights {name}.{tag} are not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}. "
        f"Fix, either: (a) on a machine with internet run `huggingface-cli download {repo} {HUB_FILES[0]}` "
        f"and copy its cache folder to {constants.HF_HUB_CACHE} here (or point HF_HOME at it); or (b) get "
        f"{endpoint}/{repo}/resolve/main/{HUB_FILES[0]} (or an official Alibaba-MIIL .pth) and pass its path "
        f"as -p WEIGHTS /path/to/file (WEIGHTS in a notebook, weights= in Python). -p WEIGHTS none (WEIGHTS = "
        f'"none" in a notebook) trains from random initialisation on purpose.'
    )


def fetch_pretrained(name: str, tag: str) -> tuple[Path, str]:
    """Path of the weights for ``name.tag`` (HF cache, else downloaded) and 'hf-cache' or 'hub'; fails fast offline."""
    from huggingface_hub import constants, hf_hub_download, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError
    from timm.models import get_pretrained_cfg

    repo = get_pretrained_cfg(f"{name}.{tag}").hf_hub_id
    cache = constants.HF_HUB_CACHE  # passed on: huggingface_hub 0.2x froze it into its modules at import
    for filename in HUB_FILES:
        cached = try_to_load_from_cache(repo, filename, cache_dir=cache)
        if isinstance(cached, str):
            return Path(cached), "hf-cache"
    if _offline_flag():
        raise _unavailable(name, tag, repo, "HF_HUB_OFFLINE is set")
    timeout = hub_timeout()
    for filename in HUB_FILES:
        url = hf_hub_url(repo, filename)  # the URL hf_hub_download will ask (HF_ENDPOINT as read at import)
        endpoint = url[: url.index(f"/{repo}/resolve/")]
        found, why = _ask_hub(url, endpoint, timeout)
        if why is not None:
            raise _unavailable(name, tag, repo, why)
        if not found:
            continue
        try:
            path = hf_hub_download(repo, filename, cache_dir=cache, etag_timeout=timeout)
        except (HfHubHTTPError, LocalEntryNotFoundError, *_transport_errors()) as err:
            why = f"the download of {filename} from {endpoint}{proxy_note(endpoint)} failed ({_cause(err)})"
            raise _unavailable(name, tag, repo, why) from err
        return Path(path), "hub"
    raise _unavailable(name, tag, repo, f"the hub repo {repo} at {constants.ENDPOINT} holds none of {HUB_FILES}")
