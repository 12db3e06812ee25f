"""Models: ``load_clip`` for every backend, the embedded tiny CLIP, and the heads later notebooks add."""

from .clip_loader import ClipBundle, WeightsUnavailable, load_clip, network_reachable, resolve_device
from .tiny_clip import TINY_MODEL, pretrain_tiny_clip, register_course_configs
