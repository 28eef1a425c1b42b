"""The study's placement-group cleaner (platform/placement.py): a trial's worker placement group is
removed once the trial has ended and the Train controller that created it is dead, never before."""
import time
from types import SimpleNamespace

import pytest
import ray
from ray._private import services
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

from transcenter.platform.placement import PlacementGroupCleaner
from transcenter.platform.trial_files import TRIAL_NUMBER_KEY, record_placement_group, run_dir, trial_key

pytestmark = [pytest.mark.ray]


@ray.remote(num_cpus=0)
class Controller:
    def actor_id(self) -> str:
        return ray.get_runtime_context().get_actor_id()


@pytest.fixture(autouse=True)
def another_cluster_started_last(monkeypatch):
    """This machine's last ``ray start`` recorded another cluster (nothing listens there): the
    cleaner must ask the cluster it is connected to, not the one Ray would find by itself."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir=None: "127.0.0.1:9")


def _state(group) -> str:
    return placement_group_table(group)["state"]


def _ended_trial(cleaner: PlacementGroupCleaner, number: int) -> None:
    cleaner.on_trial_complete(0, [], SimpleNamespace(config={TRIAL_NUMBER_KEY: number}))


def _recorded_group(train_dir: str, number: int):
    """Returns (a ready placement group, a live controller actor), recorded for trial ``number``."""
    group = placement_group([{"CPU": 0.01}])
    ray.get(group.ready(), timeout=60)
    controller = Controller.remote()
    record_placement_group(run_dir(train_dir, trial_key(number)), group.id.hex(),
                           ray.get(controller.actor_id.remote()))
    return group, controller


def test_the_group_goes_once_the_controller_is_dead_and_not_before(ray_cluster, tmp_path):
    group, controller = _recorded_group(str(tmp_path), 4)
    cleaner = PlacementGroupCleaner(str(tmp_path), interval_s=0)
    cleaner.on_step_begin(0, [])
    _ended_trial(cleaner, 4)
    cleaner.on_step_begin(0, [])
    assert _state(group) == "CREATED"  # its controller may still use it
    ray.kill(controller)
    deadline = time.time() + 60
    while _state(group) != "REMOVED" and time.time() < deadline:
        cleaner.on_step_begin(0, [])
        time.sleep(0.5)
    assert _state(group) == "REMOVED"


def test_a_group_already_removed_or_never_recorded_is_no_error(ray_cluster, tmp_path):
    group = placement_group([{"CPU": 0.01}])
    ray.get(group.ready(), timeout=60)
    remove_placement_group(group)  # the controller shut its worker group down itself
    controller = Controller.remote()
    controller_id = ray.get(controller.actor_id.remote())
    ray.kill(controller)
    record_placement_group(run_dir(str(tmp_path), trial_key(1)), group.id.hex(), controller_id)
    cleaner = PlacementGroupCleaner(str(tmp_path), interval_s=0)
    _ended_trial(cleaner, 1)
    _ended_trial(cleaner, 2)  # stopped before its worker group started: nothing recorded
    deadline = time.time() + 30
    while cleaner.pending and time.time() < deadline:
        cleaner.on_step_begin(0, [])
        time.sleep(0.5)
    assert not cleaner.pending
    assert _state(group) == "REMOVED"


def test_at_the_end_of_the_study_every_group_left_goes(ray_cluster, tmp_path):
    """A group its living actor keeps for a next trial (WarmWorkerGroup) that never comes: the
    study's end removes it."""
    group, controller = _recorded_group(str(tmp_path), 3)
    cleaner = PlacementGroupCleaner(str(tmp_path), interval_s=0)
    _ended_trial(cleaner, 3)
    cleaner.on_step_begin(0, [])
    assert _state(group) == "CREATED" and cleaner.pending == 1
    cleaner.on_experiment_end([])
    deadline = time.time() + 30
    while _state(group) != "REMOVED" and time.time() < deadline:
        time.sleep(0.2)
    assert _state(group) == "REMOVED" and not cleaner.pending
    ray.kill(controller)
