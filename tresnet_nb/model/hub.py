"""Pretrained weights from the Hugging Face hub: the local cache first, then the hub when it can be reached; a
machine without internet gets, within seconds, an error that says which file to put where."""

from __future__ import annotations

import os
from pathlib import Path

from ..runtime import host_reachable

HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub repos hold, safest first


class WeightsUnavailableError(RuntimeError):
    """Requested pretrained weights are neither cached nor downloadable from here."""


def _offline_flag() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def fetch_pretrained(name: str, tag: str) -> tuple[Path, str]:
    """Path of the weights for ``name.tag`` (HF cache, else downloaded) and 'hf-cache' or 'hub'; fails fast offline."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    repo = get_pretrained_cfg(f"{name}.{tag}").hf_hub_id
    for filename in HUB_FILES:
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Path(cached), "hf-cache"
    endpoint = constants.ENDPOINT
    if _offline_flag() or not host_reachable(endpoint):
        why = "HF_HUB_OFFLINE is set" if _offline_flag() else f"{endpoint} cannot be reached"
        raise WeightsUnavailableError(
            f"Weights {name}.{tag} are not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}. "
            f"Fix, either: (a) on a machine with internet run `huggingface-cli download {repo} {HUB_FILES[0]}` "
            f"and copy its cache folder to {constants.HF_HUB_CACHE} here (or point HF_HOME at it); or (b) get "
            f"{endpoint}/{repo}/resolve/main/{HUB_FILES[0]} (or an official Alibaba-MIIL .pth) and pass its path "
            f"as weights='/path/to/file'. weights=None trains from random initialisation."
        )
    from huggingface_hub.errors import EntryNotFoundError

    for filename in HUB_FILES:
        try:
            return Path(hf_hub_download(repo, filename)), "hub"
        except EntryNotFoundError:
            continue
    raise WeightsUnavailableError(f"Hub repo {repo} holds none of {HUB_FILES}")
