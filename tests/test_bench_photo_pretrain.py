"""``benchmarks/bench_photo_pretrain.py`` run end to end on a slice of the real sample: ``--keep-model`` caches the
timed run's weights where the real profile looks for them, and never times a model it would only load."""

from dataclasses import replace

import pytest
import torch

from course_utils.data.registry import load_catalogue
from course_utils.tasks import photo_pretrain as photo
from tests.conftest import load_benchmark

ROWS, EPOCHS, BATCH = 400, 1, 32


def test_keep_model_caches_the_timed_run_for_the_real_profile_and_refuses_to_time_a_cached_one(
    fashion_product_sample, isolated_cache, monkeypatch, capsys
):
    bench = load_benchmark("bench_photo_pretrain")
    arguments = ["--data-root", str(fashion_product_sample), "--limit", str(ROWS), "--epochs", str(EPOCHS)]
    threads = str(torch.get_num_threads())  # the benchmark sets torch's thread count: leave it as the suite's
    arguments += ["--batch-size", str(BATCH), "--gallery", "50", "--threads", threads, "--keep-model"]
    assert bench.main(arguments) == 0
    assert "| 1 |" in capsys.readouterr().out  # the run was trained, timed and evaluated

    # The notebooks' loader (with its triplets) and the recipe's own defaults find the same weights without training.
    catalogue = load_catalogue("fashion-product-small", fashion_product_sample, seed=0, limit=ROWS)
    recipe = replace(photo.PHOTO_RECIPE, train=replace(photo.PHOTO_RECIPE.train, epochs=EPOCHS, batch_size=BATCH))
    assert photo.photo_clip_path(catalogue.split("train"), recipe, "cpu").exists()
    monkeypatch.setattr(photo, "fit", lambda *a, **k: pytest.fail("trained again although the benchmark kept it"))
    assert (
        photo.pretrained_photo_clip(catalogue, recipe, progress=False).checkpoint_path.parent
        == isolated_cache / "photo-clip"
    )

    with pytest.raises(SystemExit) as refused:
        bench.main(arguments)
    assert refused.value.code == 2 and "already holds this recipe's weights" in capsys.readouterr().err
