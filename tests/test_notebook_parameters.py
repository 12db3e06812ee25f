"""Notebooks run with parameters other than a profile's: a bad value stops the run in its set-up cells and names
the parameter; notebook 05's t-SNE maps of a condition that few test items have.

Each run shares the notebook runs' cache (``outputs/test-cache``, see ``test_notebooks.py``): one that finds the
tiny CLIP not yet pretrained waits for the run that builds it (the cache's lock) or builds it. A module of its own so
that `make test`'s two processes run it beside the ci notebook run (tests/conftest.py).
"""

import json
import re

import pytest
from test_notebooks import TEST_CACHE

from course_utils import run

pytestmark = pytest.mark.notebooks


@pytest.fixture(autouse=True)
def _on_the_test_cache(monkeypatch, tmp_path):
    """Each run reads the notebook runs' cache and writes its records and figures under its own ``tmp_path``."""
    monkeypatch.setenv("FASHION_COURSE_CACHE", str(TEST_CACHE))
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(tmp_path))


@pytest.mark.parametrize(
    ("number", "assignment", "said", "by_cell"),
    [
        ("01", {"match_attributes": "colour"}, "parameter match_attributes='colour': it must be a list of", 8),
        ("01", {"in_batch_size": 8}, "parameter in_batch_size=8: it must be a whole number from 10", 8),
        ("02", {"train_size": 0}, "train_size must be a whole number >= 1", 5),
        (
            "05",
            {"conditions": ["color"]},
            "parameter conditions=['color']: it must be a list of attribute names from",
            6,
        ),
        # 05: 30 test items leave 'neckline' without a query; the metric failed on an empty matrix in cell 17
        ("05", {"test_size": 30}, "parameter test_size=30: it must be large enough that every condition keeps", 8),
        ("06", {"test_size": 80}, "parameter test_size=80: it must be large enough to keep 101 test items", 6),
        # 06 cuts its train split after the fine-tuning: train_size=-100 kept all but the last 100 items, unsaid
        ("06", {"train_size": -100}, "train_size must be a whole number >= 1 (or None for the whole train split)", 6),
        ("07", {"condition": "color"}, "parameter condition='color': it must be an attribute of the gallery", 5),
        (
            "08",
            {"filter_attribute": "color"},
            "parameter filter_attribute='color': it must be one of the catalogue",
            6,
        ),
        ("03", {"itm_easy_epochs": 5}, "parameter itm_easy_epochs=5: it must be below itm_epochs = 5", 20),
        # 03: an empty grid failed in max() after both re-rankers trained, a word in torch's indexing
        ("03", {"dual_weights": []}, "parameter dual_weights=[]: it must be a non-empty list of numbers", 5),
        # 03: 0 queries timed failed at the very end (IndexError); one row per check: the loop over the counts
        # (latency_queries, full_gallery_queries) is one line, as is 08's
        ("03", {"latency_queries": 0}, "parameter latency_queries=0: it must be a whole number >= 1", 5),
        # 08: each failed after the training runs, in a library's words (range() step 0, numpy, torchrun, FAISS);
        # ondisk_chunk stands for the loop over the counts (processes, embed_batch, n_queries, top_k, nlist, ...)
        ("08", {"ondisk_chunk": 0}, "parameter ondisk_chunk=0: it must be a whole number >= 1", 6),
        ("08", {"n_queries": 100000}, "parameter n_queries=100000: it must be at most the catalogue's", 6),
        ("08", {"train_batch": 33}, "parameter train_batch=33: it must be a whole multiple of processes = 2", 6),
        ("08", {"pq_m": 5}, "parameter pq_m=5: it must be a divisor of the embedding size 128", 6),
        # 08: nprobe 1.5 ran as nprobe 1 (FaissIndex floors it) under the label 1.5
        ("08", {"nprobes": [1.5]}, "parameter nprobes=[1.5]: it must be a non-empty list of whole numbers", 6),
    ],
)
def test_a_bad_parameter_stops_the_notebook_in_its_set_up_naming_it(tmp_path, number, assignment, said, by_cell):
    """A value that ran silently wrong (07's condition, 06's train_size) or failed minutes later in a library's words
    (08's filter_attribute after the Milvus build: ``IndexError``) stops the run in the notebook's first cells."""
    (notebook,) = run.discover([number])
    parameters = {**run.profile_parameters(notebook, "ci"), **assignment}
    with pytest.raises(run.NotebookFailed) as failed:
        run.execute(notebook, tmp_path / notebook.name, parameters, run.KERNEL, cell_timeout=600)
    message = str(failed.value)
    assert said in message
    # in the set-up (the cell after load_experiment), before any training or evaluation (03: before its re-ranker
    # trains; the runner's cell numbers count the parameters cell papermill adds)
    assert int(re.search(r"failed in cell (\d+)", message).group(1)) <= by_cell, message


def test_05_draws_the_tsne_maps_of_a_condition_with_30_items_or_fewer_and_says_so(tmp_path):
    """sklearn's TSNE refuses perplexity 30 for 30 points or fewer: with test_size=70 only 28 test items have a sleeve,
    and 05 failed in its t-SNE cell. The maps of such a condition use a lower perplexity; the notebook prints why."""
    (notebook,) = run.discover(["05"])
    parameters = {**run.profile_parameters(notebook, "ci"), "test_size": 70, "conditions": ["sleeve", "length"]}
    run.execute(notebook, tmp_path / notebook.name, parameters, run.KERNEL, cell_timeout=600)
    cells = json.loads((tmp_path / notebook.name).read_text())["cells"]
    printed = "".join("".join(output.get("text", "")) for cell in cells for output in cell.get("outputs", []))
    said = r"t-SNE of '{}': only \d+ test items have it, too few for perplexity 30; its maps use perplexity \d"
    assert all(re.search(said.format(condition), printed) for condition in ("sleeve", "length")), printed[-3000:]
