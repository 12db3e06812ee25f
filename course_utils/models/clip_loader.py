"""``load_clip``: one bundle (model, preprocess, tokenizer, embed_dim, identity) for every CLIP backend.

Backends: ``open_clip`` (any open_clip model name with a pretrained tag or a checkpoint file, a ``local-dir:``
folder or an ``hf-hub:`` repository) and the OpenAI ``clip`` package (``"clip:ViT-B/32"`` or ``"clip:/path.pt"``).
Offline is the normal case on course machines, so missing weights are detected before any download starts (a look
in the Hugging Face cache, then a short network probe) and reported with what to do, instead of sitting in
open_clip's download retries (notebook 01).
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

from ..errors import error_summary
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
        tokenizer: list of strings -> ``(n, context_length) int64`` token ids (both backends).
        embed_dim: size of the joint embedding.
        identity: stable string naming model, weights and preprocessing; keys embedding caches (see
            :func:`load_clip`).
        device: where the model lives.
        history: training records when the course trained the weights (the embedded tiny CLIP).
        checkpoint_path: where those weights are cached.
    """

    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable[[list[str]], torch.Tensor]
    embed_dim: int
    identity: str
    device: torch.device
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

    def texts_at_context_limit(self, texts: list[str]) -> list[bool]:
        """Whether each text fills the tokenizer's whole context (:attr:`context_length` tokens), so that words past
        it may not be read: every CLIP tokenizer here cuts a longer text without a word. Read off the last token:
        a text that ends in the padding a one-word text ends in was not cut."""
        padding = self.tokenizer(["a"])[0, -1]
        return (self.tokenizer(list(texts))[:, -1] != padding).tolist()

    @property
    def context_length(self) -> int:
        """How many tokens of a text the text tower reads."""
        return int(self.tokenizer(["a"]).shape[1])


#: The device names the course takes, for the messages that refuse another.
DEVICE_CHOICES = "'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'"


def device_problem(device: str) -> str | None:
    """``None`` when this machine has ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``); else
    why not, for the caller's message (a Python parameter's through :func:`resolve_device`, a command-line flag's
    through ``cli.device_name``)."""
    if device == "auto":
        return None
    try:
        resolved = torch.device(device)
    except RuntimeError:
        return "not a device name"
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            return "this machine has no usable CUDA GPU"
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            return f"this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            return "Apple's MPS backend is not available here"
    elif resolved.type != "cpu":
        return f"device type {resolved.type!r} is not supported by the course"
    return None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` and ``"mps"`` are checked.

    Raises:
        ValueError: an unknown device name (``"tpu"``), or a device this machine lacks (``"cuda"`` without a GPU,
            ``"cuda:3"`` with one GPU), with what to pass instead; torch would fail later with its internals.
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
    problem = device_problem(str(device))
    if problem is not None:
        raise ValueError(f"device={str(device)!r}: {problem}; use device={DEVICE_CHOICES}")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor] | torch.jit.ScriptModule:
    """The state dict in ``path`` (read as open_clip reads one: ``torch.load`` with ``weights_only=True`` or
    safetensors, unwrapped from ``"state_dict"``, ``module.`` prefixes stripped), else the TorchScript archive it holds
    (the format of OpenAI's CLIP releases).

    Raises:
        BadCheckpoint: neither (truncated, corrupt or another format), naming the file. torch's own message for an
            unreadable file advises ``weights_only=False`` (which would run any code pickled into the file); it is
            never passed on.
    """
    from open_clip.factory import load_state_dict

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'torch.load' received a zip file", UserWarning)  # TorchScript: tried next
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        try:
            return load_state_dict(str(path))
        except Exception:  # noqa: BLE001, S110 - not a state dict; it may still be a TorchScript archive
            pass
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - any failure means "not a checkpoint"
            raise BadCheckpoint(
                f"cannot read the checkpoint {path}: it is not a PyTorch/safetensors checkpoint "
                f"({type(err).__name__}; truncated, corrupt or another format). Download or save it again, or pass "
                "a pretrained tag instead"
            ) from None


def _does_not_fit(path: Path, model: str, err: Exception) -> BadCheckpoint:
    """The error for a readable checkpoint that ``model`` cannot take, with the loader's reason (summarised by
    :func:`course_utils.errors.error_summary`, which leaves torch's advice to pass ``weights_only=False`` out)."""
    return BadCheckpoint(
        f"the checkpoint {path} loads but does not fit model {model!r} ({error_summary(err, limit=400)}); pass the "
        "model name it was trained as"
    )


def _checkpoint_error(path: Path, model: str, err: Exception) -> BadCheckpoint:
    """A clear error for a checkpoint open_clip failed to load: unreadable, a TorchScript archive (which open_clip
    does not load), or readable but not ``model``'s."""
    try:
        checkpoint = _read_checkpoint(path)
    except BadCheckpoint as unreadable:
        return unreadable
    if isinstance(checkpoint, torch.jit.ScriptModule):
        return BadCheckpoint(
            f"the checkpoint {path} is a TorchScript archive (the format of OpenAI's CLIP releases), which open_clip "
            f"does not load; load it with the OpenAI backend: model='clip:{path}'"
        )
    return _does_not_fit(path, model, err)


def weights_file_label(path: str | Path) -> str:
    """How an identity names weights read from a file: by its bytes (``file-`` and 12 hex digits of its SHA-256),
    so two files of one name are told apart and a renamed copy is not. :func:`load_clip` names ``pretrained=FILE``
    so; a bundle that loads a file into its model afterwards (``--weights``, ``--checkpoint``) appends
    ``+`` and the label to its identity."""
    return f"file-{content_digest(path)[:12]}"


def load_weights(model: torch.nn.Module, path: str | Path, name: str) -> None:
    """Load the weights saved in ``path`` into ``model`` (an instance of open_clip model ``name``).

    The file is read as :func:`load_clip` reads a checkpoint, so no code pickled into it runs. It may hold a plain
    ``state_dict`` (``torch.save(model.state_dict(), path)``) or one under ``"model"`` (the course's cached
    pretrained CLIPs).

    Raises:
        FileNotFoundError: ``path`` is not a file (named).
        BadCheckpoint: the file is truncated, corrupt, another format (a TorchScript archive, a pickled object, a
            training checkpoint with its optimizer and RNG states), or holds another model's weights; the message
            names the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; give the state_dict file saved for {name!r}")
    state = _read_checkpoint(path)
    if isinstance(state, torch.jit.ScriptModule):
        raise BadCheckpoint(
            f"the weights file {path} is a TorchScript archive; save a state dict instead: "
            "torch.save(model.state_dict(), path)"
        )
    if isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise _does_not_fit(path, name, err) from None


def network_reachable(hosts=WEIGHT_HOSTS, timeout: float = 1.0) -> bool:
    """True when one of the weight hosts accepts a TCP connection within ``timeout`` seconds.

    False without probing when ``HF_HUB_OFFLINE`` (or, when that is unset, ``TRANSFORMERS_OFFLINE``) holds a value
    huggingface_hub reads as true: ``1``, ``true``, ``yes`` or ``on``, in any case.
    """
    from huggingface_hub.constants import ENV_VARS_TRUE_VALUES

    offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if offline is not None and offline.upper() in ENV_VARS_TRUE_VALUES:
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


def _cached_hub_file(repo_id: str, filename: str) -> str | None:
    """Path of ``filename`` of the Hugging Face repository ``repo_id`` in the local cache, or ``None``; for a
    ``.bin``/``.pth`` weights file its ``.safetensors`` twin first, as open_clip's ``download_pretrained_from_hf``
    looks for them."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import _get_safe_alternatives

    for candidate in (*_get_safe_alternatives(filename), filename):
        found = try_to_load_from_cache(repo_id, candidate)
        if isinstance(found, str):
            return found
    return None


def _cached_open_clip_weights(name: str, tag: str) -> str | None:
    """Path of already-downloaded weights of open_clip's ``name``/``tag``, or ``None``.

    The tag's ``hf_hub`` entry is split as open_clip's ``download_pretrained`` splits it: ``"org/repo/"`` (a
    trailing slash) names the repository's default ``open_clip_pytorch_model.bin``, ``"org/repo/file.bin"`` that file.
    """
    import open_clip
    from open_clip.constants import HF_WEIGHTS_NAME

    repo_id, filename = os.path.split(open_clip.get_pretrained_cfg(name, tag)["hf_hub"])
    return _cached_hub_file(repo_id, filename or HF_WEIGHTS_NAME)


def _source_files(schema: str, identifier: str) -> tuple[str | None, str | None]:
    """``(config, weights)``: the files open_clip reads for a ``local-dir:`` folder or an ``hf-hub:`` repository
    (found in the Hugging Face cache); ``None`` for one that is absent."""
    from open_clip.constants import HF_CONFIG_NAME, HF_WEIGHTS_NAME
    from open_clip.factory import _find_checkpoint_in_dir

    if schema == "local-dir":
        config = Path(identifier) / HF_CONFIG_NAME
        return (str(config) if config.is_file() else None), _find_checkpoint_in_dir(Path(identifier))
    return _cached_hub_file(identifier, HF_CONFIG_NAME), _cached_hub_file(identifier, HF_WEIGHTS_NAME)


def _source_label(config: str, weights: str | None) -> str:
    """The identity label of a ``local-dir:``/``hf-hub:`` model: the digests of its weights file (``random-init``
    when it has none, as open_clip then initialises) and of its config, which also sets the preprocessing."""
    weights_label = f"file-{content_digest(weights)[:12]}" if weights else "random-init"
    return f"{weights_label}-config-{content_digest(config)[:12]}"


def _load_open_clip(name: str, pretrained: str | None, device: torch.device) -> ClipBundle:
    import open_clip
    from open_clip.factory import parse_model_name

    schema, identifier = parse_model_name(name)
    weights = pretrained
    label = pretrained or "random-init"
    checkpoint: Path | None = None
    if schema:
        if pretrained is not None:
            raise ValueError(
                f"pretrained={pretrained!r} does not apply to model={name!r}: a {schema}: model loads the config and "
                "weights it names (open_clip would ignore pretrained); leave pretrained=None"
            )
        config, found = _source_files(schema, identifier)
        if schema == "hf-hub" and not (config and found) and not network_reachable():
            raise WeightsUnavailable(
                _offline_message(
                    f"the config and weights of the Hugging Face repository {identifier}",
                    "run once on a machine with internet (they are cached under ~/.cache/huggingface) and copy that "
                    f"cache here, or download the repository (huggingface-cli download {identifier} --local-dir DIR) "
                    "and pass model='local-dir:DIR'.",
                )
            )
        checkpoint = Path(found) if found else None
    elif name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5)
        raise ValueError(f"unknown open_clip model {name!r}; close names: {close} (see open_clip.list_models())")
    elif pretrained:
        if Path(pretrained).expanduser().is_file():
            checkpoint = Path(pretrained).expanduser()
            weights = str(checkpoint)
            label = weights_file_label(checkpoint)
        elif pretrained not in open_clip.list_pretrained_tags_by_model(name):
            raise ValueError(
                f"{pretrained!r} is neither a file nor a pretrained tag of {name}; "
                f"tags: {open_clip.list_pretrained_tags_by_model(name)}"
            )
        elif _cached_open_clip_weights(name, pretrained) is None and not network_reachable():
            raise WeightsUnavailable(
                _offline_message(
                    f"open_clip weights {name}/{pretrained}",
                    "run once on a machine with internet (they are cached under ~/.cache/huggingface), copy that "
                    "cache here, or pass pretrained='/path/to/checkpoint.pt' (or model='local-dir:/path/to/folder' "
                    "holding open_clip_config.json and weights).",
                )
            )
    try:
        # A tag is always passed as the tag, never as its cached file: the tag also sets the preprocessing.
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights, device=device)
    except Exception as err:
        if checkpoint is None:
            raise
        raise _checkpoint_error(checkpoint, name, err) from None
    if schema:  # looked up again: an hf-hub: repository not cached before has just been downloaded
        label = _source_label(*_source_files(schema, identifier))
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
    return ClipBundle(model, preprocess, tokenizer, embed_dim, f"open_clip:{name}:{label}", device)


def _load_openai_clip(name: str, device: torch.device) -> ClipBundle:
    """OpenAI's ``clip`` package: a released model name, or a file holding a TorchScript archive (the released
    ``.pt`` format) or a state dict in OpenAI's layout, built as ``clip.load(..., jit=False)`` builds them (clip's
    ``build_model`` stores the weight matrices in half precision; the model is then cast to float32)."""
    import clip

    path = Path(name).expanduser()
    if path.is_file():
        checkpoint = _read_checkpoint(path)
        state_dict = checkpoint.state_dict() if isinstance(checkpoint, torch.jit.ScriptModule) else checkpoint
        try:
            model = clip.model.build_model(state_dict).to(device)
        except Exception as err:
            raise _does_not_fit(path, f"clip:{name}", err) from None
        preprocess = clip.clip._transform(model.visual.input_resolution)
        label = f"file-{content_digest(path)[:12]}"
    elif name in clip.available_models():
        cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(clip.clip._MODELS[name])
        if not cached.exists() and not network_reachable():
            raise WeightsUnavailable(
                _offline_message(
                    f"OpenAI CLIP weights {name}",
                    f"copy {cached.name} into ~/.cache/clip/ or pass model='clip:/path/to/{cached.name}'.",
                )
            )
        model, preprocess = clip.load(name, device=device, jit=False)
        label = name
    else:
        raise ValueError(
            f"unknown OpenAI CLIP model {name!r}; choose one of {clip.available_models()} or the path of a "
            "TorchScript archive (OpenAI's released .pt) or of a state dict in OpenAI's layout (.pt, .bin, "
            ".safetensors)"
        )
    model = model.float().eval()
    tokenizer = lambda texts: clip.tokenize(texts, truncate=True).long()  # noqa: E731 - int32 from clip; int64 as open_clip
    return ClipBundle(model, preprocess, tokenizer, int(model.text_projection.shape[1]), f"clip:{label}", device)


def load_clip(name: str, pretrained: str | None = None, device: str | torch.device = "auto") -> ClipBundle:
    """Load a CLIP model by name (notebooks 01-07).

    Args:
        name: an open_clip model name (``"ViT-B-32"``, ``"tiny-fashion-clip"``); ``"local-dir:/path"``, a folder
            holding ``open_clip_config.json`` and weights; ``"hf-hub:org/repo"``, an open_clip repository on the
            Hugging Face Hub; or, for the OpenAI package, ``"clip:ViT-B/32"`` or ``"clip:/path/file.pt"`` (a
            TorchScript archive as OpenAI released them, or a state dict in OpenAI's layout).
        pretrained: for an open_clip model name: an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``), a
            checkpoint path, or ``None`` for random initialisation; ``None`` for the other names. The course's own
            ``"embedded"`` tiny CLIP is trained, not loaded: get it from
            ``course_utils.tasks.pretrain.pretrained_tiny_clip`` (or ``cu.tasks.load_experiment``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``, ``"mps"``); checked by :func:`resolve_device`.

    Returns:
        A :class:`ClipBundle` whose ``identity`` is ``open_clip:<name>:<tag>``, ``open_clip:<name>:random-init``,
        ``open_clip:<name>:file-<sha256[:12]>`` for a checkpoint file, ``open_clip:<name>:file-<sha256[:12]>-config-
        <sha256[:12]>`` for a ``local-dir:``/``hf-hub:`` model (its weights and config files), ``clip:<name>`` or
        ``clip:file-<sha256[:12]>``.

    Raises:
        WeightsUnavailable: weights are not cached and there is no network (found before any download starts).
        ValueError: unknown model name or pretrained tag, a ``pretrained`` for a ``local-dir:``/``hf-hub:`` name,
            or a device this machine lacks.
        BadCheckpoint: a checkpoint file that cannot be read, is a TorchScript archive given to open_clip, or does
            not fit the model (names the file).
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
