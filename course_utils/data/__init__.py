"""Data layer: one record schema, one registry, the procedural catalogue and real-format loaders."""

from .records import (
    SPLITS,
    ArrayImage,
    Catalogue,
    CompositionTriplet,
    CorruptImage,
    DatasetNotFound,
    FileImage,
    Item,
    LoadReport,
    OversizedImage,
)
from .adapters import ImageTextDataset, collate_skipping_unreadable
from .protocols import ConditionSplit, attribute_retrieval_protocol
from .registry import available_catalogues, load_catalogue, reads_folder, register_catalogue
from .triplets import attribute_swap_triplets, fashion200k_phrase

# Loader modules register themselves with the registry on import.
from . import synthetic  # noqa: E402,F401  (embedded default)
from . import deepfashion, fashion200k, fashion_product, fashioniq  # noqa: E402,F401
