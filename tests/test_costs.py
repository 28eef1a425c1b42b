"""Params/MACs counted once per architecture per study: the first trial counts and
leaves the file, later ones read it; a torn file is counted again."""
from unittest import mock

from transcenter.model.evaluation import complexity
from transcenter.model.training.experiment import trial_config
from transcenter.platform.costs import cached_count, cost_key


def _model(**overrides):
    return trial_config("smoke", {"model.num_classes": 3, **overrides}).detector.model


def test_each_architecture_is_counted_once(tmp_path):
    count = cached_count(str(tmp_path))
    with mock.patch.object(complexity, "count", wraps=complexity.count) as counted:
        first = count(_model())
        assert count(_model()) == first  # read back, not counted
        other = count(_model(**{"model.heatmap_size": 32}))
    assert counted.call_count == 2
    assert first == complexity.count(_model()) and other["macs"] > first["macs"]
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_a_torn_cache_file_is_counted_again(tmp_path):
    (tmp_path / f"{cost_key(_model())}.json").write_text('{"params": 1')
    assert cached_count(str(tmp_path))(_model()) == complexity.count(_model())
