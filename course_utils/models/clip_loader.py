"""``load_clip``: one bundle (model, preprocess, tokenizer, embed_dim, identity) for every CLIP backend.

Backends: ``open_clip`` (any open_clip model name with a pretrained tag, a checkpoint file or a
``local-dir:`` folder) and the OpenAI ``clip`` package (``"clip:ViT-B/32"``). Offline is the normal case on
course machines, so missing weights are detected before any download starts (a short network probe) and
reported with what to do, instead of sitting in open_clip's download retries (notebook 01).
"""

from __future__ import annotations

import difflib
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..file_digests import content_digest
from .tiny_clip import register_course_configs

WEIGHT_HOSTS = ("huggingface.co", "openaipublic.azureedge.net")


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are neither cached nor local and cannot be downloaded (offline)."""


class BadCheckpoint(ValueError):
    """A checkpoint file cannot be read (truncated, corrupt, another format) or does not fit the model."""


@dataclass
class ClipBundle:
    """A CLIP model with what is needed to use it.

    Attributes:
        model: the ``torch.nn.Module`` (``encode_image`` / ``encode_text``).
        preprocess: PIL image -> ``(3, H, W)`` tensor, the evaluation transform.
        tokenizer: list of strings -> ``(n, context_length) int64`` token ids.
        embed_dim: size of the joint embedding.
        identity: stable string naming model and weights; keys embedding caches.
        device: where the model lives.
        backend: ``"open_clip"`` or ``"clip"``.
        history: training records when the course trained the weights (the embedded tiny CLIP).
        checkpoint_path: where those weights are cached.
    """

    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable[[list[str]], torch.Tensor]
    embed_dim: int
    identity: str
    device: torch.device
    backend: str = "open_clip"
    history: list | None = None
    checkpoint_path: Path | None = None

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``(n, 3, H, W)`` preprocessed images -> ``(n, embed_dim) float32``, L2-normalised."""
        features = self.model.encode_image(images.to(self.device))
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """List of captions -> ``(n, embed_dim) float32``, L2-normalised."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        features = self.model.encode_text(tokens)
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's learned inverse temperature, as a log value (``exp()`` it to scale similarities)."""
        return self.model.logit_scale


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` and ``"mps"`` are checked.

    Raises:
        ValueError: an unknown device name (``"tpu"``), or a device this machine lacks (``"cuda"`` without a GPU,
            ``"cuda:3"`` with one GPU), with what to pass instead; torch would fail later with its internals.
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    choices = "use device='auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {str(device)!r}; {choices}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} but this machine has no usable CUDA GPU; {choices}")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={str(device)!r} but this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0..cuda:{torch.cuda.device_count() - 1}; {choices}"
            )
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device={str(device)!r} but Apple's MPS backend is not available here; {choices}")
    elif resolved.type != "cpu":
        raise ValueError(f"device type {resolved.type!r} is not supported by the course; {choices}")
    return resolved


def _checkpoint_readable(path: Path) -> bool:
    """Whether ``path`` loads as a state dict (``torch.load``, safetensors) or a TorchScript archive."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        loaders = [lambda: load_file(str(path))]
    else:
        loaders = [
            lambda: torch.load(path, map_location="cpu", weights_only=True),
            lambda: torch.jit.load(str(path), map_location="cpu"),
        ]
    for load in loaders:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
                load()
            return True
        except Exception:  # noqa: BLE001, S112 - any failure means "not this format"; the next loader may fit
            continue
    return False


def _checkpoint_error(path: Path, model: str, err: Exception) -> BadCheckpoint:
    """A clear error for a checkpoint that failed to load: unreadable, or readable but not this model's.

    torch's own message for an unreadable file advises ``weights_only=False`` (which would run any code pickled
    into the file); it is never passed on.
    """
    if not _checkpoint_readable(path):
        return BadCheckpoint(
            f"cannot read the checkpoint {path}: it is not a PyTorch/safetensors checkpoint ({type(err).__name__}; "
            "truncated, corrupt or another format). Download or save it again, or pass a pretrained tag instead"
        )
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip() and "weights_only" not in line]
    detail = " ".join(lines)[:400]
    return BadCheckpoint(
        f"the checkpoint {path} loads but does not fit model {model!r} ({detail}); pass the model name it was "
        "trained as"
    )


def network_reachable(hosts=WEIGHT_HOSTS, timeout: float = 1.0) -> bool:
    """True when one of the weight hosts accepts a TCP connection within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    for host in hosts:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def _offline_message(what: str, how: str) -> str:
    return (
        f"{what} are not cached and this machine cannot download them (offline or HF_HUB_OFFLINE=1).\n"
        f"To use them: {how}\n"
        "Or run the embedded default instead: model='tiny-fashion-clip', pretrained='embedded' (no download)."
    )


def _cached_open_clip_weights(name: str, tag: str) -> str | None:
    """Path of already-downloaded open_clip weights for ``name``/``tag``, or ``None``."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(cfg["hf_hub"].rstrip("/"))
        if not filename:
            repo_id, filename = cfg["hf_hub"].rstrip("/"), "open_clip_pytorch_model.bin"
        for candidate in ("open_clip_model.safetensors", filename):
            found = try_to_load_from_cache(repo_id, candidate)
            if isinstance(found, str):
                return found
    if cfg.get("url"):
        path = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        if path.exists():
            return str(path)
    return None


def _load_open_clip(name: str, pretrained: str | None, device: torch.device) -> ClipBundle:
    import open_clip

    if not name.startswith(("local-dir:", "hf-hub:")) and name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5)
        raise ValueError(f"unknown open_clip model {name!r}; close names: {close} (see open_clip.list_models())")
    weights = pretrained
    label = pretrained or "random-init"
    checkpoint: Path | None = None
    if pretrained and not name.startswith("local-dir:"):
        if Path(pretrained).expanduser().is_file():
            checkpoint = Path(pretrained).expanduser()
            weights = str(checkpoint)
            label = f"file-{content_digest(weights)[:12]}"
        elif pretrained not in open_clip.list_pretrained_tags_by_model(name):
            raise ValueError(
                f"{pretrained!r} is neither a file nor a pretrained tag of {name}; "
                f"tags: {open_clip.list_pretrained_tags_by_model(name)}"
            )
        else:
            cached = _cached_open_clip_weights(name, pretrained)
            if cached:
                weights = cached
            elif not network_reachable():
                raise WeightsUnavailable(
                    _offline_message(
                        f"open_clip weights {name}/{pretrained}",
                        "run once on a machine with internet (they are cached under ~/.cache/huggingface or "
                        "~/.cache/clip), copy that cache here, or pass pretrained='/path/to/checkpoint.pt' "
                        "(or model='local-dir:/path/to/folder' holding open_clip_config.json and weights).",
                    )
                )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights, device=device)
    except Exception as err:
        if checkpoint is None:
            raise
        raise _checkpoint_error(checkpoint, name, err) from None
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    embed_dim = (
        int(model.text_projection.shape[1])
        if hasattr(model, "text_projection") and model.text_projection is not None
        else None
    )
    if embed_dim is None:
        with torch.no_grad():
            embed_dim = int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])
    return ClipBundle(model, preprocess, tokenizer, embed_dim, f"open_clip:{name}:{label}", device, "open_clip")


def _load_openai_clip(name: str, device: torch.device) -> ClipBundle:
    import clip

    if Path(name).expanduser().is_file():
        path, label = str(Path(name).expanduser()), f"file-{content_digest(name)[:12]}"
    elif name in clip.available_models():
        path, label = name, name
        cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(clip.clip._MODELS[name])
        if not cached.exists() and not network_reachable():
            raise WeightsUnavailable(
                _offline_message(
                    f"OpenAI CLIP weights {name}",
                    f"copy {cached.name} into ~/.cache/clip/ or pass model='clip:/path/to/{cached.name}'.",
                )
            )
    else:
        raise ValueError(f"unknown OpenAI CLIP model {name!r}; choose one of {clip.available_models()} or a .pt path")
    try:
        model, preprocess = clip.load(path, device=device, jit=False)
    except Exception as err:
        if not Path(path).is_file():
            raise
        raise _checkpoint_error(Path(path), f"clip:{name}", err) from None
    model = model.float().eval()
    tokenizer = lambda texts: clip.tokenize(texts, truncate=True)  # noqa: E731
    return ClipBundle(
        model, preprocess, tokenizer, int(model.text_projection.shape[1]), f"clip:{label}", device, "clip"
    )


def load_clip(name: str, pretrained: str | None = None, device: str | torch.device = "auto") -> ClipBundle:
    """Load a CLIP model by name (notebooks 01-07).

    Args:
        name: an open_clip model name (``"ViT-B-32"``, ``"tiny-fashion-clip"``), ``"local-dir:/path"``, or
            ``"clip:ViT-B/32"`` for the OpenAI package.
        pretrained: an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``), a checkpoint path, or ``None`` for
            random initialisation. The course's own ``"embedded"`` tiny CLIP is trained, not loaded: get it from
            ``course_utils.tasks.pretrain.pretrained_tiny_clip`` (or ``cu.tasks.load_experiment``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``, ``"mps"``); checked by :func:`resolve_device`.

    Raises:
        WeightsUnavailable: weights are not cached and there is no network (found before any download starts).
        ValueError: unknown model name or pretrained tag, or a device this machine lacks.
        BadCheckpoint: a checkpoint file that cannot be read or does not fit the model (names the file).
    """
    device = resolve_device(device)
    if pretrained == "embedded":
        raise ValueError(
            "pretrained='embedded' is the course's tiny CLIP pretrained on the procedural catalogue: build it with "
            "cu.tasks.load_experiment(model='tiny-fashion-clip', pretrained='embedded') or "
            "cu.tasks.pretrain.pretrained_tiny_clip(catalogue); load_clip loads existing weights only"
        )
    if name.startswith("clip:"):
        return _load_openai_clip(name[len("clip:") :], device)
    register_course_configs()
    return _load_open_clip(name, pretrained, device)
