"""Where a model's LoRA adapters come from, and what the listing routes show.

Torch-free on purpose: the ingress uses it to answer ``GET /v1/loras`` and to reject
unknown names with a 400 naming the field before a request reaches a replica, and
the replica uses it to find the file it loads. Everything read here comes from the
safetensors header (keys and shapes), never the tensors.

A request names an adapter in one of three ways:

- a plain name: the stem of a ``*.safetensors`` file in one of ``loras.dirs``;
- a hub reference ``owner/repo/file.safetensors``: fetched once through
  ``huggingface_hub`` by the replica, only where the model may reach the hub;
- an ``http(s)://`` URL: fetched by the ingress through the SSRF-safe fetcher into the
  first LoRA folder as ``url-<hash>`` (``serve_app/inputs/lora_urls.py``).
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from common.families import demo_loras
from common.model_config import LoraConfig, ModelConfig
from common.paths import default_cache_root

SUFFIX = ".safetensors"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")
HUB_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+/[\w./-]*\.safetensors$")
Source = Literal["dir", "hub", "url"]


class LoraLookupError(ValueError):
    """A request names an adapter this model cannot use; ``code`` says why."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LoraInfo:
    """One adapter as the listing routes show it."""

    name: str
    source: Source
    path: str | None
    size_bytes: int | None
    rank: int | None
    target_model: str
    # Why the file cannot be used (corrupt header, too big), or None.
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lora_dirs(config: LoraConfig, model: ModelConfig | None = None) -> list[Path]:
    """The configured folders, or ``$IMAGEGEN_CACHE/loras`` (SDXL), or
    ``$IMAGEGEN_CACHE/loras/<family>`` for the other families: an adapter is for one
    architecture, so families never share a default folder."""
    if config.dirs:
        return [Path(d).expanduser() for d in config.dirs]
    family = model.known_family() if model is not None else None
    if family in (None, "sdxl"):
        return [default_cache_root() / "loras"]
    return [default_cache_root() / "loras" / str(family)]


def classify(name: str) -> Source:
    if name.startswith(("https://", "http://")):
        return "url"
    if "/" in name:
        return "hub"
    return "dir"


def header_rank(path: Path) -> int:
    """The adapter's rank from its header (the smallest side of its first down matrix).

    Raises ``ValueError`` when the file is not a readable safetensors file: a corrupt or
    truncated header, or data shorter than the header promises.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            keys = list(handle.keys())
            for key in keys:
                if any(part in key for part in ("lora_A", "lora_down", "lora.down")):
                    shape = handle.get_slice(key).get_shape()
                    return int(min(shape[:2])) if len(shape) >= 2 else int(shape[0])
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"not a readable safetensors file ({exc})") from None
    raise ValueError(f"no LoRA down/A weights among its {len(keys)} tensors")


class LoraRegistry:
    """One model's adapters: scans ``loras.dirs`` on demand (listing, refresh, a miss)."""

    def __init__(self, model: ModelConfig) -> None:
        self.model_id = model.id
        self.config = model.loras
        self.model = model
        # Written by the replica at its start; a cold model's demos are valid names already.
        self.demos = demo_loras(model.source) if model.loras.demo_adapters else ()
        self.allow_hub = model.allows_hub()
        self._lock = threading.Lock()
        self._files: dict[str, Path] = {}
        self._scanned = False

    def refresh(self) -> dict[str, Path]:
        """Rescan the folders; the first folder wins for a name found twice."""
        found: dict[str, Path] = {}
        for folder in lora_dirs(self.config, self.model):
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob(f"*{SUFFIX}")):
                found.setdefault(path.name.removesuffix(SUFFIX), path)
        with self._lock:
            self._files, self._scanned = found, True
        return found

    def files(self) -> dict[str, Path]:
        with self._lock:
            if self._scanned:
                return dict(self._files)
        return self.refresh()

    def names(self) -> list[str]:
        return sorted(self.files())

    def local_path(self, name: str) -> Path:
        """The file of a plain name, rescanning once on a miss (a file added since)."""
        path = self.files().get(name) or self.refresh().get(name)
        if path is None or not path.is_file():
            shown = ", ".join(self.names()[:20]) or "none"
            raise LoraLookupError(
                f"Unknown LoRA adapter '{name}' for model '{self.model_id}'. Available: {shown}.",
                "lora_not_found",
            )
        return self._within_cap(name, path)

    def _within_cap(self, name: str, path: Path) -> Path:
        """``path``, unless the file is over ``loras.max_file_bytes``."""
        size = path.stat().st_size
        if size > self.config.max_file_bytes:
            raise LoraLookupError(
                f"LoRA adapter '{name}' is {size} bytes, over this server's cap of "
                f"{self.config.max_file_bytes} bytes.",
                "lora_too_large",
            )
        return path

    def check(self, name: str, urls_ok: bool = False) -> None:
        """Raise :class:`LoraLookupError` unless ``name`` can be resolved (no download).

        ``urls_ok``: the caller (the ingress) fetches URLs itself (``inputs/lora_urls.py``).
        """
        if not self.config.enabled:
            raise LoraLookupError(
                f"The model '{self.model_id}' does not take LoRA adapters.", "lora_disabled"
            )
        kind = classify(name)
        if kind == "url":
            if not urls_ok or not self.config.allow_urls:
                raise LoraLookupError(
                    f"LoRA adapter '{name[:200]}': adapters by URL are not accepted here; "
                    "put the file in a LoRA folder and name it by its file stem.",
                    "lora_url_refused",
                )
            return
        if kind == "hub":
            if not HUB_RE.match(name):
                raise LoraLookupError(
                    f"LoRA adapter '{name[:200]}' is not a hub reference of the form "
                    "'owner/repo/file.safetensors'.",
                    "invalid_lora_reference",
                )
            if not self.allow_hub:
                raise LoraLookupError(
                    f"LoRA adapter '{name}' is a hub reference, but the model "
                    f"'{self.model_id}' may not download from the hub (local files only).",
                    "lora_hub_disabled",
                )
            return
        if not NAME_RE.match(name):
            raise LoraLookupError(f"'{name[:200]}' is not a LoRA adapter name.", "lora_not_found")
        if name in self.demos and name not in self.files():
            return  # the replica writes it before it loads anything
        self.local_path(name)

    def resolve(self, name: str) -> Path:
        """The local file for ``name``; hub references are downloaded (once, cached)."""
        self.check(name)
        if classify(name) == "dir":
            return self.local_path(name)
        from huggingface_hub import hf_hub_download

        owner, repo, filename = name.split("/", 2)
        path = Path(hf_hub_download(f"{owner}/{repo}", filename))
        return self._within_cap(name, path)

    def listing(self, refresh: bool = False) -> list[LoraInfo]:
        """Every adapter in the folders, with its rank and size from the header."""
        files = self.refresh() if refresh else self.files()
        out = []
        for name, path in sorted(files.items()):
            try:
                size: int | None = path.stat().st_size
            except OSError:
                continue  # removed since the scan
            rank, error = None, None
            if size is not None and size > self.config.max_file_bytes:
                error = f"over the size cap of {self.config.max_file_bytes} bytes"
            else:
                try:
                    rank = header_rank(path)
                except ValueError as exc:
                    error = str(exc)
            source: Source = "url" if name.startswith("url-") else "dir"
            out.append(LoraInfo(name, source, str(path), size, rank, self.model_id, error))
        for name in self.demos:  # not written yet: the model has not started since
            if name not in files:
                out.append(LoraInfo(name, "dir", None, None, None, self.model_id))
        return sorted(out, key=lambda info: info.name)


_REGISTRIES: dict[tuple[str, str], LoraRegistry] = {}
_REGISTRIES_LOCK = threading.Lock()


def registry_for(model: ModelConfig) -> LoraRegistry:
    """One registry per model config in this process (the ingress's and the replica's)."""
    dirs = ",".join(str(d) for d in lora_dirs(model.loras, model))
    key = (model.id, f"{model.loras.model_dump_json()}|{model.allows_hub()}|{dirs}")
    with _REGISTRIES_LOCK:
        registry = _REGISTRIES.get(key)
        if registry is None:
            registry = _REGISTRIES[key] = LoraRegistry(model)
        return registry
