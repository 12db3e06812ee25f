"""Helper package of the fashion-clip-course notebooks: ``import course_utils as cu``.

Datasets (``cu.data``), models (``cu.models``) and metrics (``cu.metrics``) are separate registries joined by
the notebooks; embeddings, indexes, the retriever, training, figures and the papermill runner each live in
one module.
"""

from . import data, embed, experiment, index, losses, metrics, models, paths, results, retriever, seeding, train, viz  # noqa: F401

__version__ = "0.1.0"
