"""Per-criterion descriptive words for conditional embeddings (notebook 05): CRL's "LLM-written" word lists.

CRL builds the basis of a criterion's feature space (e.g. *colour*) from descriptive words that a large
language model writes when asked about that criterion. No LLM is reachable on course machines, so the
course ships hand-written lists as data, one JSON file per dataset in ``course_utils/data/descriptors/``::

    {"dataset": ..., "source": ..., "llm_prompt": "List {n} ... {criterion} ...",
     "default_template": "a photo of a {word} garment",
     "templates": {criterion: "... {word} ..."},       # optional, per-criterion prompt
     "criteria": {criterion: [word, ...]}}

**Plugging in an LLM.** Ask your LLM, once per criterion, the file's ``llm_prompt`` (fill ``{n}`` and
``{criterion}``), write its answers into a JSON file with the same schema, and pass that file as
``load_descriptors(dataset, path="my_words.json")`` (and to :func:`load_prompt_templates`). Nothing else
changes: the notebook embeds whatever words it is given with CLIP's text tower.
"""

from __future__ import annotations

from pathlib import Path

from .records import read_json

DESCRIPTOR_DIR = Path(__file__).parent / "descriptors"


def available_descriptor_sets() -> list[str]:
    """Datasets that ship a word list (the JSON file stems)."""
    return sorted(path.stem for path in DESCRIPTOR_DIR.glob("*.json"))


def _read(dataset: str, path: str | Path | None) -> tuple[Path, dict]:
    """The descriptor file of ``dataset`` (or ``path``) and its checked record; errors name the file."""
    file = Path(path).expanduser() if path is not None else DESCRIPTOR_DIR / f"{dataset}.json"
    if not file.is_file():
        raise FileNotFoundError(
            f"no descriptor words for {dataset!r} at {file}; shipped sets: {available_descriptor_sets()}. "
            "Write a JSON file with the same schema (see course_utils/data/descriptors.py) and pass path=..."
        )
    record = read_json(file)
    if not isinstance(record, dict):
        raise ValueError(f"{file}: expected a JSON object with a 'criteria' entry, got {type(record).__name__}")
    criteria = record.get("criteria")
    if not isinstance(criteria, dict) or not criteria:
        raise ValueError(f"{file}: expected a non-empty 'criteria' object {{criterion: [word, ...]}}")
    for criterion, words in criteria.items():
        if not isinstance(words, list) or len(words) < 2 or not all(isinstance(w, str) and w.strip() for w in words):
            raise ValueError(f"{file}: criterion {criterion!r} needs a list of at least 2 non-empty words")
        if len(set(words)) != len(words):
            raise ValueError(f"{file}: criterion {criterion!r} lists a word twice")
    return file, record


def load_descriptors(dataset: str, path: str | Path | None = None) -> dict[str, list[str]]:
    """The descriptive words of each criterion of ``dataset``.

    Args:
        dataset: a shipped set (``"synthetic"``, ``"fashion-product-small"``; see :func:`available_descriptor_sets`).
        path: a JSON file of the same schema to use instead, e.g. the words your LLM wrote (see module docstring).

    Returns:
        ``{criterion: [word, ...]}`` in file order; every list has at least two distinct words.
    """
    _, record = _read(dataset, path)
    return {criterion: list(words) for criterion, words in record["criteria"].items()}


def load_prompt_templates(dataset: str, path: str | Path | None = None) -> dict[str, str]:
    """The prompt of each criterion, a string with one ``{word}`` slot (e.g. ``"a photo of a {word} garment"``).

    Criteria without their own template get the file's ``default_template``.

    Raises:
        ValueError: naming the file and the key, when ``templates`` is not an object, names a criterion the file
            does not list (a typo would otherwise leave that criterion on the default), or a template is not a
            string with a ``{word}`` slot.
    """
    file, record = _read(dataset, path)
    criteria = record["criteria"]
    own_templates = record.get("templates", {})
    if not isinstance(own_templates, dict):
        raise ValueError(
            f"{file}: 'templates' must be an object {{criterion: \"... {{word}} ...\"}}, "
            f"got {type(own_templates).__name__}"
        )
    unknown = sorted(set(own_templates) - set(criteria))
    if unknown:
        raise ValueError(
            f"{file}: 'templates' has entries for {unknown}, which are not criteria; the criteria are {list(criteria)}"
        )
    default = record.get("default_template", "a photo of a {word} garment")
    _check_template(file, "default_template", default)
    for criterion, template in own_templates.items():
        _check_template(file, f"templates[{criterion!r}]", template)
    return {criterion: own_templates.get(criterion, default) for criterion in criteria}


def _check_template(file: Path, key: str, template: object) -> None:
    """``ValueError`` naming ``file`` and ``key`` unless ``template`` is a string with a ``{word}`` slot."""
    if not isinstance(template, str) or "{word}" not in template:
        raise ValueError(f"{file}: {key} must be a string with a {{word}} slot, got {template!r}")
