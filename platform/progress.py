"""What a study prints while it runs: one line per running trial, a total with an ETA, and a note
as each trial ends; and what keeps Ray's own output off the console.

The console shows the study's own terms (its searched parameters, its objectives, epochs of
``epochs``), not Tune's (iterations, trial ids, every reported metric). Lines are plain text at a
bounded rate, so they read the same in a terminal, a CI log or ``ray job logs``:

    [0:01:05] trials: 1 completed, 2 running, 1 pending, 0 stopped, 0 failed | epochs 5/8 | ETA 0:00:43
      trial-00002 model.heatmap_size=32  epoch 1/2  AP50 0.0379  3.2 s/epoch
    trial-00001 model.heatmap_size=128: completed 2/2 epochs, AP50 0.0702
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from ray.tune import Callback

from transcenter.platform.outcome import COMPLETED, ended_status, trial_error
from transcenter.platform.train_log import ANSI
from transcenter.platform.trial_files import REPLAY_KEY, split_config

EPOCH_KEY = "epoch"


@dataclass
class _Trial:
    """What the console knows of one trial."""

    key: str  # trial-00007
    params: dict[str, Any]
    epoch: int = 0
    values: dict[str, float] = field(default_factory=dict)  # the latest objectives
    epoch_s: float | None = None  # the latest epoch's seconds
    reported_at: float = 0.0  # the console's clock at its latest result
    started: bool = False
    replayed: int = 0  # epochs reported again from a checkpoint (a resumed study): not timed
    ended: str | None = None  # "completed", "stopped", "failed"


class StudyProgress(Callback):
    """Tune callback that prints the study's progress (driver side).

    Every ``interval_s`` at most: a total (trials completed, running, pending, stopped, failed;
    epochs done of those still planned; an ETA from the epochs per second trained so far, at least
    the time the slowest running trial needs at its own seconds per epoch) and one
    line per running trial (its searched values, epoch n/N, its latest objectives, seconds per
    epoch). At once, as a trial ends: whether it completed, was stopped early at epoch k, or failed
    (its one-line error), followed by the total.

    Args:
        params: the searched parameters' dotted names (``model.heatmap_size``).
        objectives: the metrics shown for each trial (``AP50``).
        epochs: epochs of a trial that runs to the end.
        samples: trials this run of the study starts (Tune's own count replaces it at setup).
        stopper: who stops trials early (``"ASHA"``), None when no one does.
        interval_s: the least seconds between two trial tables.
        time_scale: seconds of a result's ``time_s`` per second of ``clock`` (a simulated study's
            time scale; 1 for trials that train), so the ETA is in seconds of ``clock``.
        out: where lines go (default ``sys.stdout``).
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, params: list[str], objectives: list[str], epochs: int, samples: int,
                 stopper: str | None = None, interval_s: float = 30.0, time_scale: float = 1.0,
                 out: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.params = list(params)
        self.objectives = list(objectives)
        self.epochs = epochs
        self.samples = samples
        self.stopper = stopper
        self.interval_s = interval_s
        self.time_scale = time_scale
        self.out = out
        self.clock = clock
        self.trials: dict[str, _Trial] = {}  # by Tune trial id
        self.start = clock()
        self.last_table = self.last_total = self.start
        self.last_counts = ""  # the last total printed, without its time

    def setup(self, total_num_samples: int | None = None, **info) -> None:
        if total_num_samples:
            self.samples = total_num_samples
        self.start = self.last_table = self.last_total = self.clock()

    def _print(self, line: str) -> None:
        out = self.out or sys.stdout
        print(ANSI.sub("", line), file=out, flush=True)

    def _print_total(self, trials: list | None = None) -> None:
        line = self._total(trials)
        self._print(line)
        self.last_total, self.last_counts = self.clock(), line.split("] ", 1)[1]

    def _trial(self, trial) -> _Trial:
        if trial.trial_id not in self.trials:
            key, params = split_config(trial.config)
            self.trials[trial.trial_id] = _Trial(key, {k: params.get(k) for k in self.params})
        return self.trials[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._trial(trial).started = True

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        state = self._trial(trial)
        state.started = True
        if EPOCH_KEY in result:
            state.epoch = int(result[EPOCH_KEY])
            if result.get(REPLAY_KEY):  # and the next report, the checkpoint's last epoch
                state.replayed = state.epoch + 1
        state.reported_at = self.clock()
        state.values.update({k: float(result[k]) for k in self.objectives
                             if isinstance(result.get(k), (int, float))})
        seconds = result.get("time_s", result.get("time_this_iter_s"))
        if isinstance(seconds, (int, float)):
            state.epoch_s = float(seconds)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        state = self._trial(trial)
        if state.ended:
            return
        state.ended = ended_status(state.epoch, self.epochs)
        if state.ended == COMPLETED:
            what = f"completed {state.epoch}/{self.epochs} epochs"
        else:
            by = f" by {self.stopper}" if self.stopper else ""
            what = f"stopped{by} at epoch {state.epoch}/{self.epochs}"
        self._print(f"{self._name(state)}: {what}{self._values(state, ', ')}")
        self._print_total(trials)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        state = self._trial(trial)
        state.ended = "failed"
        error = trial_error(trial)
        self._print(f"{self._name(state)}: failed at epoch {state.epoch}/{self.epochs}: "
                    f"{(error or 'no error recorded').splitlines()[0]}")
        self._print_total(trials)

    def on_step_end(self, iteration, trials, **info) -> None:
        if self.clock() - self.last_table < self.interval_s:
            return
        self.last_table = self.clock()
        if self.clock() - self.last_total >= 1.0:  # unless a trial's note just gave it
            self._print_total(trials)
        for trial in trials:
            state = self._trial(trial)
            if trial.status == "RUNNING" and not state.ended:
                speed = f"  {state.epoch_s:.1f} s/epoch" if state.epoch_s is not None else ""
                self._print(f"  {self._name(state)}  epoch {state.epoch}/{self.epochs}"
                            f"{self._values(state, '  ')}{speed}")

    def on_experiment_end(self, trials, **info) -> None:
        if self._total(trials).split("] ", 1)[1] != self.last_counts:  # the final total, once
            self._print_total(trials)

    def _name(self, state: _Trial) -> str:
        return " ".join([state.key, *(f"{k}={_short(v)}" for k, v in state.params.items())])

    def _values(self, state: _Trial, lead: str) -> str:
        shown = [f"{k} {_short(state.values[k])}" for k in self.objectives if k in state.values]
        return lead + ", ".join(shown) if shown else ""

    def _total(self, trials: list | None = None) -> str:
        """The total line: trials by state, epochs done of those planned, the ETA."""
        ended = [t for t in self.trials.values() if t.ended]
        count = {s: sum(t.ended == s for t in ended) for s in ("completed", "stopped", "failed")}
        running = (sum(t.status == "RUNNING" and not self._trial(t).ended for t in trials)
                   if trials is not None
                   else sum(t.started and not t.ended for t in self.trials.values()))
        pending = max(0, self.samples - len(ended) - running)
        done = sum(t.epoch for t in self.trials.values())
        trained = sum(max(0, t.epoch - t.replayed) for t in self.trials.values())  # in this run
        # An ended trial plans no more epochs than it trained; every other one the full count.
        planned = sum(t.epoch for t in ended) + (self.samples - len(ended)) * self.epochs
        now = self.clock()
        elapsed = now - self.start
        left = max(0, planned - done)
        # The study's pace up to its latest result, but no sooner than its slowest running trial
        # can end at its own pace (the last trials of a grid are often its largest); both count
        # down with the clock while no result comes.
        latest = max((t.reported_at for t in self.trials.values() if t.epoch), default=now)
        paced = (latest - self.start) * left / trained - (now - latest) if trained else 0.0
        slowest = max(((self.epochs - t.epoch) * t.epoch_s / self.time_scale - (now - t.reported_at)
                       for t in self.trials.values() if t.started and not t.ended and t.epoch_s),
                      default=0.0)
        eta = ("0:00:00" if not left else "?" if not trained
               else _clock(max(paced, slowest)) if max(paced, slowest) > 0 else "any moment")
        return (f"[{_clock(elapsed)}] trials: {count['completed']} completed, {running} running, "
                f"{pending} pending, {count['stopped']} stopped, {count['failed']} failed | "
                f"epochs {done}/{planned} | ETA {eta}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def table_interval_s(stream: TextIO | None = None) -> float:
    """Seconds between two trial tables: 10 in a terminal, 30 in a file or a pipe (a CI log)."""
    stream = stream or sys.stdout
    return 10.0 if stream.isatty() else 30.0


class _PlainStream:
    """A text stream that writes to ``stream`` without terminal colour codes; every other attribute
    is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(ANSI.sub("", text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def prepare_console() -> None:
    """Readies this process's console before Ray starts: stdout flushed line by line (so that a
    line printed before Ray's precedes Ray's on stderr in a merged log), and, when stdout is not a
    terminal, no colour codes in what Ray prints here (its log records, the lines it forwards from
    workers and its notes on lines it deduplicated, which it colours whatever the settings)."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    if sys.stdout.isatty():
        return
    os.environ["RAY_COLOR_PREFIX"] = "0"  # read as each forwarded line is printed
    if not isinstance(sys.stdout, _PlainStream):  # Ray's console handler writes to sys.stderr
        sys.stdout, sys.stderr = _PlainStream(sys.stdout), _PlainStream(sys.stderr)


@contextlib.contextmanager
def quiet_tune(logger_files: bool = True) -> Iterator[None]:
    """Within: Tune prints no console output of its own for a ``RunConfig(verbose=0)``; with
    ``logger_files=False`` it also writes none of its per-trial CSV, JSON and TensorBoard files,
    and the result grid's warning that it found none of them is not shown.

    Tune's default ("new") output prints, even at verbosity 0, a configuration table and a
    TensorBoard command into Ray's session folder (which ``ray stop`` deletes); its legacy output
    at verbosity 0 prints nothing. ``RAY_AIR_NEW_OUTPUT=0`` (documented) selects the legacy one;
    ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1`` (documented) leaves out the file loggers.
    """
    # TUNE_DISABLE_SIGINT_HANDLER (documented): Ctrl-C raises KeyboardInterrupt in the driver, which
    # says what was stored and how to continue, instead of Tune's Tuner.restore advice, which does
    # not apply to a study (it continues with --resume).
    wanted = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_SIGINT_HANDLER": "1"}
    # Without the file loggers, the result grid fit() returns finds no result.json or progress.csv
    # and warns once per trial; the study's rows are in parquet, so that warning says nothing.
    # (Tune's other warnings, such as its event-loop timings on a busy machine, go to the study's
    # driver.log with the rest of Ray's lines: train_log.upstream_logs.)
    analysis = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis.level
    if not logger_files:
        wanted["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        analysis.setLevel(logging.ERROR)
    before = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        analysis.setLevel(level)
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
