"""Evaluation protocols built from a catalogue (notebook 05): ASEN's attribute-specific retrieval.

For each condition (an attribute type such as ``colour``), the items that have the attribute are split into
queries and candidates 1:4; a candidate is relevant to a query when it has the same value of that attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .records import Catalogue


@dataclass(frozen=True)
class ConditionSplit:
    """Queries and candidates of one condition, and which candidates are relevant to each query."""

    condition: str
    query_ids: list[str]
    candidate_ids: list[str]
    query_values: list[str]
    candidate_values: list[str]
    dropped_queries: int  # queries whose value no candidate shares (AP undefined), counted not hidden

    def relevance(self) -> np.ndarray:
        """``(n_queries, n_candidates) bool``: candidate has the query's value of this condition."""
        return np.asarray(self.query_values)[:, None] == np.asarray(self.candidate_values)[None, :]


def attribute_retrieval_protocol(
    catalogue: Catalogue, conditions: Sequence[str] | None = None, query_share: float = 0.2, seed: int = 0
) -> dict[str, ConditionSplit]:
    """Split each condition's items into queries and candidates (1:4 by default), as ASEN does.

    Args:
        catalogue: usually the test split.
        conditions: attribute types to evaluate; default all of the catalogue's attribute names.
        query_share: fraction of each condition's items used as queries (0.2 gives ASEN's 1:4).
        seed: shuffling seed. The conditions draw from one generator in the order listed, so listing another
            condition before one reshuffles that one's split too (another equally valid 1:4 split); the committed
            records of every profile were made with this order, so it stays.

    Returns:
        ``{condition: ConditionSplit}``; queries whose value has no candidate are dropped and counted.
    """
    if not 0 < query_share < 1:
        raise ValueError(f"query_share must be in (0, 1), got {query_share}")
    conditions = list(conditions or catalogue.attribute_names)
    rng = np.random.default_rng(seed)
    splits = {}
    for condition in conditions:
        items = [item for item in catalogue if condition in item.attributes]
        if len(items) < 2:
            raise ValueError(f"condition {condition!r}: only {len(items)} items have it; choose another condition")
        order = rng.permutation(len(items))
        n_queries = max(1, int(round(len(items) * query_share)))
        queries = [items[i] for i in order[:n_queries]]
        candidates = [items[i] for i in order[n_queries:]]
        candidate_values = {c.attributes[condition] for c in candidates}
        kept = [q for q in queries if q.attributes[condition] in candidate_values]
        splits[condition] = ConditionSplit(
            condition=condition,
            query_ids=[q.item_id for q in kept],
            candidate_ids=[c.item_id for c in candidates],
            query_values=[q.attributes[condition] for q in kept],
            candidate_values=[c.attributes[condition] for c in candidates],
            dropped_queries=len(queries) - len(kept),
        )
    return splits
