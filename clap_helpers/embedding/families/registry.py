"""Which family loads a checkpoint: the registry of model families and checkpoint look-up.

Every family module registers itself with :func:`register_family` (a name, a loader, and how to
recognise its checkpoints: ``config.json`` ``model_type`` values and/or a ``detect`` function for
checkpoints without a config, such as a single ``.pth`` file). :func:`load_family` is what
:func:`clap_helpers.load_clap` calls::

    fam = load_family("laion/clap-htsat-unfused", device=torch.device("cpu"))
    fam = load_family("/weights/CLAP_weights_2023.pth", family="msclap-2023", text_model="gpt2")

Detection reads ``config.json`` from a local folder or from the offline Hugging Face cache (a hub
id that is not cached is downloaded once unless ``HF_HUB_OFFLINE=1``); an unknown ``model_type``
is a clear error naming the known families. Extra keyword arguments go to the family's loader.

This module also owns the checkpoint plumbing every loader shares: the model argument check
(missing folders and files are named), the revision that keys the embedding cache (hub commit of
the cached snapshot, or a hash of local files' names, sizes and mtimes) and the message for a hub
id that is neither cached nor downloadable.

To add a family: write ``families/<name>.py`` with a :class:`~.base.ModelFamily` subclass and a
``load(model_id, *, device, revision=None, **kwargs)`` function, call :func:`register_family` at
the bottom of the module, and add the module to :data:`FAMILY_MODULES`.

Used by: clap_helpers.embedding.encoder (``load_clap``) and every family module.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .base import ModelFamily

__all__ = [
    "FAMILIES",
    "FAMILY_MODULES",
    "FamilySpec",
    "UnknownFamilyError",
    "check_model",
    "detect_family",
    "family_names",
    "load_family",
    "local_revision",
    "read_config",
    "register_family",
    "resolve_revision",
    "unreachable_message",
]

#: Modules (in this package) that register a family when imported, in detection order.
FAMILY_MODULES = ["laion", "pe_audio", "msclap", "m2d_clap", "audioclip"]
_COMMIT = re.compile(r"[0-9a-f]{40}")


class UnknownFamilyError(ValueError):
    """No registered family recognises the checkpoint (or ``family=`` names none)."""


@dataclass(frozen=True)
class FamilySpec:
    """One registered family.

    ``loader(model_id, *, device, revision=None, **kwargs) -> ModelFamily``; ``model_types``: the
    ``config.json`` ``model_type`` values it loads; ``detect(model_id, config) -> bool`` for
    checkpoints a ``model_type`` cannot name (``config`` is the parsed ``config.json`` or None).
    """

    name: str
    loader: Callable[..., ModelFamily]
    model_types: tuple[str, ...] = ()
    detect: Callable[[str, dict | None], bool] | None = None
    description: str = ""


#: name -> :class:`FamilySpec`; filled by the modules in :data:`FAMILY_MODULES` on first use.
FAMILIES: dict[str, FamilySpec] = {}
_imported = False


def register_family(
    name: str,
    loader: Callable[..., ModelFamily],
    *,
    model_types: tuple[str, ...] | list[str] = (),
    detect: Callable[[str, dict | None], bool] | None = None,
    description: str = "",
) -> FamilySpec:
    """Register (or replace) the family ``name``; returns its :class:`FamilySpec`."""
    spec = FamilySpec(name, loader, tuple(model_types), detect, description)
    FAMILIES[name] = spec
    return spec


def _import_builtin() -> None:
    global _imported
    if _imported:
        return
    for module in FAMILY_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    # Detection order = FAMILY_MODULES order, whichever family module was imported first
    # (importing families/m2d_clap.py directly registers it before laion); others keep theirs.
    rank = {f"{__package__}.{m}": i for i, m in enumerate(FAMILY_MODULES)}
    ordered = sorted(FAMILIES.items(), key=lambda kv: rank.get(kv[1].loader.__module__, len(rank)))
    FAMILIES.clear()
    FAMILIES.update(ordered)
    _imported = True


def family_names() -> list[str]:
    """Names of every registered family (built-in ones included)."""
    _import_builtin()
    return list(FAMILIES)


# ----------------------------------------------------------------------------------------------
# Checkpoint plumbing shared by the loaders
# ----------------------------------------------------------------------------------------------
def _looks_like_path(model: str) -> bool:
    """A local path rather than a hub id (``org/name`` or ``name``)."""
    if model.startswith(("/", "./", "../", "~", ".\\", "..\\")) or model in (".", ".."):
        return True
    if "\\" in model:
        return True
    return model.count("/") > 1


def check_model(model: str | os.PathLike, needs_config: bool = True) -> str:
    """The model argument as a string. A local path that does not exist, or a folder without
    ``config.json`` (when ``needs_config``), is a clear error, not transformers' complaint
    about repo ids. A local file (a ``.pth`` checkpoint) is returned as it is."""
    model_id = str(model)
    path = Path(model_id).expanduser()
    if path.is_file():
        return model_id
    if isinstance(model, os.PathLike) or _looks_like_path(model_id) or path.is_dir():
        if not path.is_dir():
            raise FileNotFoundError(
                f"model folder not found: {model_id} (pass an existing folder in "
                "from_pretrained layout, a checkpoint file, or a hub id such as "
                "laion/clap-htsat-unfused)"
            )
        if needs_config and not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model folder {model_id} has no config.json: it must hold a checkpoint saved "
                "with save_pretrained (config.json, weights, tokenizer and preprocessor files)"
            )
    return model_id


def unreachable_message(model_id: str, revision: str | None, exc: Exception) -> str:
    """One line naming the fixes for a hub id that is neither cached nor downloadable."""
    from huggingface_hub import constants

    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    at = f" at revision {revision!r}" if revision else ""
    return (
        f"cannot load model {model_id!r}{at}: it is not in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}) and could not be downloaded ({reason}). Fix: connect to "
        "the internet once to download it; or set HF_HOME to the folder whose hub/ cache holds "
        "it (HF_HUB_OFFLINE=1 then loads it offline); or pass a local checkpoint folder "
        "(load_clap('/local/folder'), notebooks: -p model /local/folder)"
    )


def read_config(model_id: str, revision: str | None = None) -> dict | None:
    """The parsed ``config.json`` of a local folder or hub id (offline cache first, then one
    download unless offline); None for a checkpoint file. Raises OSError with
    :func:`unreachable_message` for a hub id that cannot be reached."""
    path = Path(model_id).expanduser()
    if path.is_file():
        return None
    if path.is_dir():
        config = path / "config.json"
        return json.loads(config.read_text()) if config.is_file() else None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except ValueError:
        found = None
    if not isinstance(found, str):
        try:
            found = hf_hub_download(model_id, "config.json", revision=revision)
        except Exception as exc:  # noqa: BLE001 - offline, no such repo, network: one message
            raise OSError(unreachable_message(model_id, revision, exc)) from None
    return json.loads(Path(found).read_text())


def local_revision(path: str | os.PathLike) -> str:
    """``local-<hash>`` of a local file or folder (its resolved path and its files' names,
    sizes and mtimes): changes whenever a checkpoint file is replaced."""
    path = Path(path).expanduser()
    h = hashlib.sha1(str(path.resolve()).encode())
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for p in files:
        st = p.stat()
        h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return "local-" + h.hexdigest()[:16]


def _snapshot_commit(model_id: str, revision: str | None) -> str | None:
    """The commit of the cached snapshot ``revision`` (default main) resolves to, or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id
        return None
    if not isinstance(path, str):
        return None
    snapshot = Path(path).parent
    if snapshot.parent.name != "snapshots" or not _COMMIT.fullmatch(snapshot.name):
        return None
    return snapshot.name


def resolve_revision(model_id: str, revision: str | None = None, config=None) -> str:
    """Cache key of a checkpoint: the commit of the cached hub snapshot (transformers 5 no
    longer sets ``config._commit_hash``, and a branch name would serve stale embeddings once the
    checkpoint is updated), or :func:`local_revision` of a local file or folder."""
    if Path(model_id).expanduser().exists():
        return local_revision(model_id)
    commit = _snapshot_commit(model_id, revision)
    return commit or getattr(config, "_commit_hash", None) or revision or "main"


# ----------------------------------------------------------------------------------------------
# Detection and loading
# ----------------------------------------------------------------------------------------------
def detect_family(model_id: str, revision: str | None = None) -> str:
    """Name of the family that loads ``model_id`` (see the module doc); UnknownFamilyError if
    none does."""
    _import_builtin()
    config = read_config(model_id, revision)
    model_type = (config or {}).get("model_type")
    for spec in FAMILIES.values():
        if model_type is not None and model_type in spec.model_types:
            return spec.name
    for spec in FAMILIES.values():
        if spec.detect is not None and spec.detect(model_id, config):
            return spec.name
    what = f"model_type {model_type!r}" if model_type else "no config.json model_type"
    raise UnknownFamilyError(
        f"{model_id}: {what}, and no registered model family recognises it (known families: "
        f"{', '.join(sorted(FAMILIES))}); pass family=<one of them> if you know which it is"
    )


def load_family(
    model: str | os.PathLike,
    *,
    family: str | None = None,
    device: torch.device | str = "cpu",
    revision: str | None = None,
    **kwargs,
) -> ModelFamily:
    """Load ``model`` (hub id, local folder, checkpoint file or its ``http(s)://`` release URL)
    as a :class:`ModelFamily` on ``device``; ``family`` skips detection; ``kwargs`` go to the
    family's loader, except ``checksum`` (``"sha256:<hex>"`` of a URL's download) and
    ``checkpoint_cache`` (where URLs are cached), see :mod:`clap_helpers.embedding.checkpoints`.
    A URL, and any loader option given as a URL (e.g. ``bpe_vocab``), is fetched once into that
    cache and the family is detected from the local file."""
    from ..checkpoints import is_url, resolve_checkpoint

    _import_builtin()
    checksum, cache = kwargs.pop("checksum", None), kwargs.pop("checkpoint_cache", None)
    model = resolve_checkpoint(model, checksum=checksum, cache_dir=cache)
    kwargs = {
        k: resolve_checkpoint(v, cache_dir=cache) if is_url(v) else v for k, v in kwargs.items()
    }
    model_id = check_model(model, needs_config=family is None)
    if family is None:
        family = detect_family(model_id, revision)
    if family not in FAMILIES:
        raise UnknownFamilyError(
            f"unknown model family {family!r}; known families: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[family].loader(
        model_id, device=torch.device(device), revision=revision, **kwargs
    )
