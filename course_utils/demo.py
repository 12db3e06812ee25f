"""Everything notebook 07's demos query, built by one call: :func:`load_demo_state`.

Notebook 07 builds, cell by cell, an experiment (catalogue x model), notebook 02's fine-tuned model, a
:class:`~course_utils.retriever.FashionRetriever` over the test split, CRL's training-free conditional encoder
(notebook 05's hook) and a parameter-free compositor (notebook 06's hook). The classroom server
(:mod:`course_utils.classroom`) needs the same objects without running the notebook, so they are built here, in
one function with the notebook's parameters; when the package is reshaped, this is the one place to fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data.descriptors import available_descriptor_sets, load_descriptors, load_prompt_templates
from .data.records import Catalogue
from .models.compositors import make_compositor
from .models.conditional import conditional_projection
from .retriever import FashionRetriever
from .tasks.attributes import CriterionBases, build_criterion_bases
from .tasks.experiment import Experiment, load_experiment
from .tasks.retrieval import finetuned_bundle


class CriterionProjection:
    """CRL's training-free conditional encoder, as the retriever's ``conditional_encoder`` hook (notebook 05).

    ``(q, d)`` CLIP image features and a condition name -> ``(q, k)`` coordinates on that condition's basis,
    L2-normalised. An unknown condition raises ``KeyError`` naming the conditions there are.
    """

    def __init__(self, bases: CriterionBases) -> None:
        self.bases = bases

    def __call__(self, features: torch.Tensor, condition: str) -> torch.Tensor:
        return conditional_projection(features, self.bases[condition])


@dataclass
class DemoState:
    """What the four query demos read; built once, then only read (safe to share between threads).

    Attributes:
        experiment: the catalogue, its splits and the base model.
        retriever: search over the test split, with the conditional and composed hooks set as asked.
        conditions: the attributes the conditional encoder knows (``[]`` when it is not set).
        reference_id, modification: the composed demo's default query (the gallery's first composition
            triplet, else the first item and ``"in blue"``): the classroom page opens its composed demo on it.
    """

    experiment: Experiment
    retriever: FashionRetriever
    conditions: list[str]
    reference_id: str
    modification: str


def load_demo_state(
    profile: str = "ci",
    seed: int = 0,
    dataset: str = "synthetic",
    data_root: str | None = None,
    model: str = "tiny-fashion-clip",
    pretrained: str | None = "embedded",
    device: str = "auto",
    test_size: int | None = None,
    finetuned: bool = True,
    compositor: str = "sum",
    conditional: bool = True,
) -> DemoState:
    """Build what notebook 07 builds, with its parameters and defaults (see its parameters cell).

    Cached like the notebook: the tiny CLIP's pretraining, notebook 02's fine-tuning and the gallery embeddings
    are read from ``data/cache`` when present (with warm caches this takes seconds; a cold cache trains first).

    Args:
        compositor: a parameter-free compositor of ``course_utils.models.compositors`` (``"sum"``,
            ``"image only"``, ``"text only"``), or ``""`` to leave the composed hook unset.
        conditional: set CRL's training-free projection as the conditional encoder (when the dataset has
            descriptor words); ``False`` leaves the hook unset.
    """
    experiment = load_experiment(dataset, data_root, model, pretrained, profile, seed, device, test_size=test_size)
    bundle = finetuned_bundle(experiment, progress=False)[0] if finetuned else experiment.bundle
    descriptors = dataset if conditional else None
    return build_demo_state(experiment, bundle, descriptors, compositor)


def build_demo_state(
    experiment: Experiment,
    bundle,
    descriptors: str | None = "synthetic",
    compositor: str = "sum",
) -> DemoState:
    """The retriever over ``experiment.test`` with ``bundle``, and the hooks notebook 07 sets.

    Args:
        experiment: from :func:`course_utils.tasks.experiment.load_experiment`.
        bundle: the model that embeds the gallery and the queries (notebook 02's fine-tuned one in the demo).
        descriptors: the descriptor set whose words build CRL's projection (usually the dataset's name);
            ``None``, or a set that does not exist, leaves the conditional hook unset.
        compositor: see :func:`load_demo_state`.
    """
    gallery = experiment.test
    retriever = FashionRetriever(bundle, gallery, caption_style=experiment.query_style)
    retriever.conditional_encoder = crl_conditional_encoder(bundle, descriptors, gallery)
    conditions = retriever.conditional_encoder.bases.criteria if retriever.conditional_encoder else []
    if compositor:
        retriever.compositor = make_compositor(compositor, bundle.embed_dim).eval()
    reference, modification = default_composed_query(gallery)
    return DemoState(experiment, retriever, conditions, reference, modification)


def crl_conditional_encoder(bundle, descriptors: str | None, gallery: Catalogue) -> CriterionProjection | None:
    """CRL's projection over the gallery attributes that the descriptor set ``descriptors`` has words for.

    ``None`` when ``descriptors`` is ``None``, no such set exists, or none of its criteria is a gallery attribute.
    """
    if descriptors not in available_descriptor_sets():
        return None
    words = load_descriptors(descriptors)
    conditions = [name for name in words if name in gallery.attribute_names]
    if not conditions:
        return None
    bases = build_criterion_bases(
        bundle, {name: words[name] for name in conditions}, load_prompt_templates(descriptors)
    )
    return CriterionProjection(bases)


def default_composed_query(gallery: Catalogue) -> tuple[str, str]:
    """The composed demo's first query: the gallery's first composition triplet, else its first item "in blue"."""
    triplet = gallery.triplets[0] if gallery.triplets else None
    return (triplet.reference_id, triplet.modification) if triplet else (gallery.ids[0], "in blue")
