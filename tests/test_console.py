"""What a person reads while a study runs: the banner first, one line per running trial
in the study's own terms, a total with an ETA, a note as each trial ends, Ray Train's per-epoch
lines in the study's log files instead of the console, and no terminal codes in a log file."""
import io
import itertools
import logging
import logging.config
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from data_fixtures import single_year_voc
from isolated import REPO, typed

from transcenter.platform.cli import build_parser, spec_from_args
from transcenter.platform.progress import StudyProgress
from transcenter.platform.search import Categorical, SearchSpace
from transcenter.platform.train_log import fold_tracebacks


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _trial(number: int, size: int, status: str = "RUNNING", error_file: str | None = None):
    return SimpleNamespace(trial_id=f"t{number}", config={"optuna_trial": number,
                                                          "model.heatmap_size": size},
                           status=status, error_file=error_file)


def test_progress_names_the_searched_values_and_objectives_and_says_how_each_trial_ended(tmp_path):
    out, clock = io.StringIO(), Clock()
    progress = StudyProgress(["model.heatmap_size"], ["AP50"], epochs=4, samples=4, stopper="ASHA",
                             interval_s=20, out=out, clock=clock)
    progress.setup(total_num_samples=4)
    a, b, c = _trial(0, 32), _trial(1, 64), _trial(2, 16)
    for t in (a, b):
        progress.on_trial_start(0, [a, b], t)
    progress.on_trial_result(0, [a, b], a, {"epoch": 1, "AP50": 0.25, "loss": 3.0, "time_s": 2.5})
    clock.now = 10
    progress.on_step_end(0, [a, b])
    assert out.getvalue() == ""  # at most one table per interval
    clock.now = 20
    progress.on_trial_result(0, [a, b], b, {"epoch": 1, "AP50": 0.125, "time_s": 3.0})
    progress.on_step_end(0, [a, b])
    table = out.getvalue().splitlines()
    # 2 epochs in 20 s, 14 still planned: 140 s left.
    assert table == [
        "[0:00:20] trials: 0 completed, 2 running, 2 pending, 0 stopped, 0 failed | epochs 2/16 | "
        "ETA 0:02:20",
        "  trial-00000 model.heatmap_size=32  epoch 1/4  AP50 0.25  2.5 s/epoch",
        "  trial-00001 model.heatmap_size=64  epoch 1/4  AP50 0.125  3.0 s/epoch"]

    clock.now = 25
    b.status = "TERMINATED"  # ASHA stops it after its first epoch
    progress.on_trial_complete(0, [a, b], b)
    error = tmp_path / "error.txt"
    error.write_text("Traceback (most recent call last):\n  ...\nray.exceptions.RayTaskError: x\n"
                     "transcenter.platform.errors.TrialFailure: diverged at epoch 1: loss is nan\n")
    c.status, c.error_file = "ERROR", str(error)
    progress.on_trial_start(0, [a, b, c], c)
    progress.on_trial_error(0, [a, b, c], c)
    for epoch in (2, 3, 4):
        progress.on_trial_result(0, [a, b, c], a, {"epoch": epoch, "AP50": 0.5})
    a.status = "TERMINATED"
    progress.on_trial_complete(0, [a, b, c], a)
    notes = out.getvalue().splitlines()[3:]
    assert notes[0] == "trial-00001 model.heatmap_size=64: stopped by ASHA at epoch 1/4, AP50 0.125"
    # The stopped trial plans 1 epoch, not 4: 2 done of 13; 10 s an epoch up to the latest result
    # (at 20 s) leaves 110 s from then, 105 s from now.
    assert notes[1].endswith("trials: 0 completed, 1 running, 2 pending, 1 stopped, 0 failed | "
                             "epochs 2/13 | ETA 0:01:45")
    assert notes[2] == "trial-00002 model.heatmap_size=16: failed at epoch 0/4: diverged at epoch 1: loss is nan"
    assert notes[4] == "trial-00000 model.heatmap_size=32: completed 4/4 epochs, AP50 0.5"
    assert "1 completed, 0 running, 1 pending, 1 stopped, 1 failed | epochs 5/9" in notes[5]
    progress.on_experiment_end([a, b, c])
    assert len(out.getvalue().splitlines()) == 3 + 6  # the last note's total is the final one


def test_eta_of_a_resumed_trial_counts_only_the_epochs_trained_in_this_run():
    out, clock = io.StringIO(), Clock()
    progress = StudyProgress(["model.heatmap_size"], ["AP50"], epochs=4, samples=1, interval_s=5,
                             out=out, clock=clock)
    progress.setup(total_num_samples=1)
    a = _trial(0, 32)
    # Its checkpoint's epochs come back at once: 1 flagged as replayed, 2 (the latest) plain.
    progress.on_trial_result(0, [a], a, {"epoch": 1, "AP50": 0.1, "replayed": 1})
    progress.on_trial_result(0, [a], a, {"epoch": 2, "AP50": 0.2})
    clock.now = 10
    progress.on_trial_result(0, [a], a, {"epoch": 3, "AP50": 0.3})
    progress.on_step_end(0, [a])
    assert out.getvalue().splitlines()[0].endswith("epochs 3/4 | ETA 0:00:10")


def test_a_warning_with_a_traceback_is_one_line_and_an_error_keeps_its_traceback():
    logger, out = logging.getLogger("test_console.fold"), io.StringIO()
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    fold_tracebacks(logger)
    fold_tracebacks(logger)  # a reused trial actor calls it again
    try:
        for level in (logging.WARNING, logging.ERROR):
            try:
                raise TimeoutError("Get timed out: some object(s) not ready.")
            except TimeoutError:
                logger.log(level, "Failed to send resource request for %s.", "train-1", exc_info=True)
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines[0] == ("Failed to send resource request for train-1. "
                        "(TimeoutError: Get timed out: some object(s) not ready.)")
    assert lines[1] == "Failed to send resource request for train-1."
    assert lines[2] == "Traceback (most recent call last):" and len(lines) > 4
    assert len(logger.filters) == 1


def test_a_dropped_warning_stays_dropped_after_logging_config_resets_the_levels():
    # Ray Train's logging setup, when a run starts, configures its parent loggers with
    # logging.config, which resets every existing child logger's level to NOTSET.
    parent, out = logging.getLogger("test_console.train"), io.StringIO()
    child = logging.getLogger("test_console.train.requests")
    handler = logging.StreamHandler(out)
    try:
        fold_tracebacks(child, logging.ERROR)
        child.setLevel(logging.ERROR)
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "loggers": {parent.name: {"level": "INFO"}}})
        assert child.level == logging.NOTSET  # a level set on the child does not last
        child.addHandler(handler)
        child.warning("Failed to send resource request for train-1.")
        child.error("the request failed for good")
        fold_tracebacks(child, logging.WARNING)  # --verbose: a reused actor's next trial
        child.warning("shown with --verbose")
    finally:
        child.removeHandler(handler)
    assert out.getvalue().splitlines() == ["the request failed for good", "shown with --verbose"]


def test_a_piped_console_gets_no_colour_codes_from_any_print():
    # Ray colours its note on deduplicated worker lines with a fixed colour, whatever its settings.
    code = (
        "import sys\n"
        "from transcenter.platform.progress import prepare_console\n"
        "prepare_console(); prepare_console()\n"
        "print('\\x1b[32m [repeated 2x across cluster]\\x1b[0m', file=sys.stderr)\n"
        "print('\\x1b[36m(trial_driver pid=1)\\x1b[0m line', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, check=True, timeout=60)
    assert sorted(done.stdout.splitlines()) == [" [repeated 2x across cluster]",
                                                "(trial_driver pid=1) line"]


def test_verbose_flag_reaches_the_spec():
    space = SearchSpace({"model.heatmap_size": Categorical([16, 32])})
    parser = build_parser("heatmap_size", "", asha=False, sampler="grid")
    assert not spec_from_args(parser.parse_args(["--preset", "smoke"]), space).verbose
    assert spec_from_args(parser.parse_args(["--preset", "smoke", "--verbose"]), space).verbose


# Every line a study prints on its own: the banner, a trial's end, the progress table, the results.
OWN_LINES = re.compile(r"study \S+: \d+ trials x \d+ epochs -> "
                       r"|  (data|live|logs|early stopping|fixed by --set, not searched): "
                       r"|trial-\d+ .*: (completed|stopped|failed|error)|\[\d+:\d\d:\d\d\] trials: "
                       r"|  trial-\d+ |results: |trials: ")


@pytest.mark.slow
def test_smoke_study_console_is_short_plain_and_starts_with_the_banner(tmp_path):
    """As ``make demo`` runs it, typed into a fresh shell: a local Ray, no line from Ray, Tune or
    Optuna (they are in the study's driver.log)."""
    storage = tmp_path / "results"
    done = typed(f"python {REPO}/studies/heatmap_size.py --preset smoke --num-samples 2 --epochs 2 "
                 f"--set data.num_train=8 --set data.num_val=4 --no-report --storage-path {storage}",
                 tmp_path, tmp_path / "ray")
    console = done.stdout
    assert done.returncode == 0, console[-4000:]
    lines = console.splitlines()
    # The shell's network namespace has no route out: Ray's C++ core, probing for the machine's
    # address before any logging is configured, says so once (a machine that is online does not).
    offline = "network_util.cc:330: Failed to determine local IP via external connectivity"
    lines = [line for line in lines if offline not in line]
    assert [line for line in lines if not OWN_LINES.match(line)] == []
    assert lines[0].startswith(f"study heatmap_size: 2 trials x 2 epochs -> {storage}/heatmap_size")
    assert lines[1].startswith("  data: synthetic, 8 train and 4 val images, 3 classes")
    assert lines[2].startswith("  live: Ray dashboard http://") and lines[3].startswith("  logs: ")
    assert "\x1b" not in console
    ended = [line for line in lines if ": completed 2/2 epochs, AP50 " in line]
    assert len(ended) == 2 and all("model.heatmap_size=" in line for line in ended)
    assert any("trials: 2 completed, 0 running, 0 pending, 0 stopped, 0 failed | epochs 4/4"
               in line for line in lines)
    assert lines[-1] == "trials: 2 completed"
    driver_log = (storage / "heatmap_size" / "logs" / "driver.log").read_text()
    assert "Started a local Ray instance" in driver_log and "\x1b" not in driver_log
    assert "/tmp/ray" not in console  # nothing points into the session folder `ray stop` deletes
    # Ray Train's lines are in the trials' log files instead.
    logs = sorted((storage / "heatmap_size" / "logs").glob("trial-*.log"))
    assert [p.name for p in logs] == ["trial-00000.log", "trial-00001.log"]
    for log in logs:
        text = log.read_text()
        assert text.count("Reporting training result") == 2 and "Checkpoint successfully created" in text
    assert len(lines) < 40, console
    assert Path(storage / "heatmap_size" / "epochs").exists()


def _clock_s(text: str) -> int:
    hours, minutes, seconds = map(int, text.split(":"))
    return 3600 * hours + 60 * minutes + seconds


@pytest.mark.slow
def test_a_study_in_a_fresh_shell_counts_its_eta_down_and_leaves_no_index_in_the_temporary_folder(tmp_path):
    """A VOC folder, typed into a fresh shell whose TMPDIR is a folder of the test's: between two
    epochs, each trial table's ETA is lower than the one before; the data index stays in the
    study's folder, and the temporary folder holds nothing of the study's (only what Ray, torch's
    import and Python's multiprocessing put there)."""
    temp = Path(tempfile.mkdtemp(prefix="tc-", dir="/tmp"))  # short: Ray's sockets go in it
    storage, voc = tmp_path / "results", single_year_voc(tmp_path / "voc", length=128)
    try:
        done = typed(f"TMPDIR={temp} python {REPO}/studies/heatmap_size.py --preset smoke "
                     f"--num-samples 1 --epochs 3 --progress-every 1 --data voc --data-root {voc} "
                     f"--no-report --storage-path {storage}", tmp_path, tmp_path / "ray")
        console = done.stdout
        assert done.returncode == 0, console[-4000:]
        left = sorted(p.name for p in temp.iterdir())
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    totals = re.findall(r"^\[(\d+:\d\d:\d\d)\] trials: .* \| epochs (\d+)/3 \| ETA (\d+:\d\d:\d\d)$",
                        console, re.M)
    pairs = [(a, b) for a, b in itertools.pairwise(totals)
             if a[1] == b[1] != "3" and _clock_s(b[0]) > _clock_s(a[0])]  # no epoch ended between
    assert pairs, console
    assert all(_clock_s(b[2]) < _clock_s(a[2]) for a, b in pairs), pairs
    assert (storage / "heatmap_size" / "data" / "index.arrow").is_file()
    assert [name for name in left if not re.fullmatch(r"ray|torchinductor_\w+|pymp-\w+", name)] == []


@pytest.mark.slow
def test_a_simulated_study_ends_with_its_summary_and_no_error_in_a_fresh_shell(tmp_path):
    """The command a user ran, with ``--set`` on a searched field, typed into a fresh shell:
    exit 0, only the study's own lines (no Tune warning that a trial's result files are missing,
    no traceback), the field fixed and said so in the banner, and an ETA in wall-clock seconds,
    not the simulated seconds the trials report."""
    done = typed(f"python {REPO}/studies/full_search.py --simulate surrogate --num-samples 20 "
                 f"--epochs 5 --max-concurrent-trials 4 --no-report --name fs20 --progress-every 1 "
                 f"--set model.heatmap_size=32 --storage-path {tmp_path / 'results'}",
                 tmp_path, tmp_path / "ray")
    console = done.stdout
    assert done.returncode == 0, console[-4000:]
    offline = "network_util.cc:330: Failed to determine local IP via external connectivity"
    lines = [line for line in console.splitlines() if offline not in line]
    assert [line for line in lines if not OWN_LINES.match(line)] == []
    assert re.fullmatch(r"trials: \d+ completed(, \d+ stopped)?", lines[-1])
    assert "  fixed by --set, not searched: model.heatmap_size=32" in lines
    ended = [line for line in lines if re.match(r"trial-\d+ .*: (completed|stopped)", line)]
    assert len(ended) == 20 and not any("model.heatmap_size" in line for line in ended)
    rows = pd.read_parquet(tmp_path / "results" / "fs20" / "epochs")
    assert set(rows["model.heatmap_size"]) == {32}
    # Once half the epochs are done, the study's pace is known: the rest takes seconds.
    etas = [eta for done, planned, eta in re.findall(r"\| epochs (\d+)/(\d+) \| ETA (\d+:\d\d:\d\d)$",
                                                     console, re.M) if 2 * int(done) >= int(planned)]
    assert etas and max(map(_clock_s, etas)) < 60, etas


def test_eta_counts_down_while_no_epoch_ends():
    out, clock = io.StringIO(), Clock()
    progress = StudyProgress(["model.heatmap_size"], ["AP50"], epochs=10, samples=1, interval_s=5,
                             out=out, clock=clock)
    progress.setup(total_num_samples=1)
    a = _trial(0, 64)
    clock.now = 100
    progress.on_trial_result(0, [a], a, {"epoch": 1, "AP50": 0.1, "time_s": 100.0})
    progress.on_step_end(0, [a])
    clock.now = 160
    progress.on_step_end(0, [a])
    clock.now = 1500
    progress.on_step_end(0, [a])
    etas = [line.rsplit("ETA ", 1)[1] for line in out.getvalue().splitlines() if "ETA" in line]
    assert etas == ["0:15:00", "0:14:00", "any moment"]


def test_eta_is_no_sooner_than_the_slowest_running_trial_can_end():
    """Three fast trials have ended; the last one left takes 60 s an epoch, two epochs to go."""
    out, clock = io.StringIO(), Clock()
    progress = StudyProgress(["model.heatmap_size"], ["AP50"], epochs=4, samples=4, interval_s=5,
                             out=out, clock=clock)
    progress.setup(total_num_samples=4)
    trials = [_trial(n, 16 if n < 3 else 128) for n in range(4)]
    for t in trials[:3]:
        for epoch in range(1, 5):
            progress.on_trial_result(0, trials, t, {"epoch": epoch, "AP50": 0.1, "time_s": 2.0})
    clock.now = 100
    for epoch in (1, 2):
        progress.on_trial_result(0, trials, trials[3], {"epoch": epoch, "AP50": 0.1, "time_s": 60.0})
    for t in trials[:3]:
        t.status = "TERMINATED"
        progress.on_trial_complete(0, trials, t)
    assert out.getvalue().splitlines()[-1].endswith("epochs 14/16 | ETA 0:02:00")
