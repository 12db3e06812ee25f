"""Models: ``load_clip`` for every backend, the tiny CLIP's config, and the modules later notebooks add.

Only ``nn.Module``s, JSON configs and loading live here; how a model is trained or evaluated is its task's
business (``course_utils.tasks``).
"""

from . import compositors, conditional, cross_modal, heads, parts, tokens
from .clip_loader import ClipBundle, WeightsUnavailable, load_clip, network_reachable, resolve_device
from .tiny_clip import TINY_MODEL, create_tiny_clip, register_course_configs
