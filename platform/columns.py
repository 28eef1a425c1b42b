"""The hyperparameter columns of a trial's rows: every scalar field of the configuration it trained.

A trial's workers resolve its configuration for their device and number
(:func:`~transcenter.model.training.experiment.resolve`) and train that. The driver resolves it the
same way, for the device and number of workers it gives each trial, so the rows it stores say what
ran rather than what was asked.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transcenter.model.training.experiment import TrialConfig, resolve, substitutions, trial_config
from transcenter.platform.trainer import Resources


def trial_overrides(overrides: dict[str, Any], resources: Resources,
                    searched: dict[str, Any]) -> dict[str, Any]:
    """Returns the configuration overrides a trial trains with: its ``searched`` values over the
    study's ``overrides`` over the thread count ``resources`` gives each worker (``train.threads``)."""
    return {"train.threads": resources.threads, **overrides, **searched}


@dataclass(frozen=True)
class TrialColumns:
    """Maps a trial's searched values to its rows' hyperparameters (callable, picklable).

    ``device`` (``"cpu"`` or ``"cuda"``) and ``world_size`` are where each trial trains; a
    ``device`` of None resolves nothing (a simulated study trains nothing).
    """

    preset: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str | None = "cpu"
    world_size: int = 1

    @classmethod
    def of(cls, preset: str | None, overrides: dict[str, Any], resources: Resources,
           trains: bool = True) -> TrialColumns:
        """Returns the columns of trials run with ``resources`` (on their GPUs, if they have any;
        the threads default the trial actor gives them); ``trains=False`` resolves nothing."""
        overrides = trial_overrides(overrides, resources, {})
        if not trains:
            return cls(preset, overrides, None)
        return cls(preset, overrides, "cuda" if resources.gpus_per_worker > 0 else "cpu",
                   resources.workers)

    def requested(self, searched: dict[str, Any]) -> TrialConfig:
        """Returns the configuration a trial with the searched values ``searched`` asks for,
        before its workers resolve it for their device."""
        return trial_config(self.preset, {**self.overrides, **searched})

    def config(self, searched: dict[str, Any]) -> TrialConfig:
        """Returns the configuration a trial with the searched values ``searched`` trains."""
        cfg = self.requested(searched)
        return cfg if self.device is None else resolve(cfg, self.device, self.world_size)

    def substitutions(self, searched: dict[str, Any], sections: tuple[str, ...] = ("model",)) -> str:
        """Returns the fields of ``sections`` that resolving changed in the trial with
        ``searched``, as :func:`~transcenter.model.training.experiment.substitutions` words them."""
        return substitutions(self.requested(searched), self.config(searched), sections)

    def __call__(self, searched: dict[str, Any]) -> dict[str, Any]:
        """Returns ``{dotted name: value}``: every bool, int, float or str field of
        :meth:`config`, and the searched values (each as resolved where resolving changed it)."""
        flat = {k: v for k, v in self.config(searched).to_flat_dict().items()
                if isinstance(v, (bool, int, float, str))}
        return {**flat, **{k: flat[k] if k in flat and flat[k] != v else v
                           for k, v in searched.items()}}
