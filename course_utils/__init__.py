"""Helper package of the fashion-clip-course notebooks: ``import course_utils as cu``.

Layers, each importing only from the ones before it (see ``course_utils/README.md``):
``data`` (catalogues) -> ``models`` (modules, configs, loading) -> ``cache``/``embed``/``metrics``/``index``/``losses``/
``train`` (building blocks) -> ``tasks`` (recipes and evaluation per task) -> ``retriever`` -> ``widgets``/``run``/
``evaluate`` (interfaces).
"""

from . import (  # noqa: F401
    cache,
    checks,
    data,
    embed,
    index,
    losses,
    metrics,
    models,
    paths,
    results,
    retriever,
    seeding,
    tasks,
    train,
    viz,
)

__version__ = "0.1.0"
