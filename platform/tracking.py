"""A study in MLflow, opt-in (``--mlflow URI``, else ``MLFLOW_TRACKING_URI``): logged by the study
driver from the results Tune hands it, beside the parquet store.

What lands where: the study is an MLflow **experiment** named after it. One run named ``study``
(tag ``transcenter.role=study``, the study's folder in ``transcenter.storage``) gets ``study.json``
and ``report.html`` as artifacts at the end. Each trial is one run named by its trial id
(``trial-00007``, tag ``transcenter.trial_id``), nested under the study run (``mlflow.parentRunId``):
its hyperparameters as the store's dotted names (every scalar field of the configuration it trained,
searched or fixed), every epoch's metrics at ``step = epoch`` (the store's metric columns, ``time_s``
and ``epoch``; NaN and inf skipped), and its end: FINISHED (completed), KILLED (stopped early by
ASHA) or FAILED with the error line in the tag ``transcenter.error``.

Why the driver: Ray Train V2 refuses Tune's logger callbacks (``MLflowLoggerCallback``), and the
driver already receives every trial's epochs exactly once (rank 0's report). A DDP trial is logged
once, and no trial actor or Train worker imports mlflow.

The parquet store stays the source of truth; MLflow is a copy that is made whole again from it:

- A trial's run is found by its tag, so a trial resumed by ``--resume`` or retried after a node loss
  continues its run; a second run for one trial is never made.
- Before the first epoch a process logs to a run, it reads the run's highest step (the history of
  the ``epoch`` metric); it logs only later epochs, each in one ``log_batch`` call. An epoch a
  resumed trial reports again from its checkpoint (flagged ``replayed``) is therefore logged only
  if MLflow missed it.
- After ``--resume`` reconciles the stores, and at the end of every run of the driver, :meth:`Tracker.sync`
  logs the epochs and ends that parquet has and MLflow lacks (a trial that ended while the driver
  was down, epochs the server missed while it was away).
- A server that fails during the study costs one bounded wait (:data:`CLIENT_ENV`) and a warning;
  the study goes on, and the sync at its end (or a later ``--resume``) fills MLflow in.

mlflow is an optional extra (``pip install '.[mlflow]'``), imported only where a study uses it.
"""
from __future__ import annotations

import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ray.tune import Callback

from transcenter.platform.callbacks import ResultStoreCallback
from transcenter.platform.errors import StudyError
from transcenter.platform.outcome import ended_status, trial_error
from transcenter.platform.trial_files import split_config
from transcenter.store.results import EPOCH_COLUMNS, META_FILE, ResultStore, is_param_column
from transcenter.store.uri import display, mask, read_text, split_password

logger = logging.getLogger(__name__)

URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own variable: the default of --mlflow
OFF = "none"  # --mlflow none: no MLflow even where MLFLOW_TRACKING_URI is set
INSTALL = "pip install '.[mlflow]'"
ROLE_TAG = "transcenter.role"  # "study" or "trial"
TRIAL_TAG = "transcenter.trial_id"
STORAGE_TAG = "transcenter.storage"  # the study's folder (its password-free location)
STATUS_TAG = "transcenter.status"  # the store's status: running, completed, stopped, error
ERROR_TAG = "transcenter.error"
STEP_METRIC = "epoch"  # logged with every epoch: its history says which steps a run has
RUN_STATUS = {"completed": "FINISHED", "stopped": "KILLED", "error": "FAILED"}
# MLflow's client retries a failed request 7 times with a backoff factor of 2 and a 120 s timeout,
# minutes in all; the study driver waits at most ~35 s for a server that went away (one warning, then
# the study goes on). Nor does it print a "View run" line for every run it ends. Values the user
# has set are kept.
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
# The MLflow UI opens an experiment of this kind on its runs table (else on its GenAI overview).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
_BATCH_PARAMS = 100  # MLflow's limit of params per log_batch


def tracking_uri(flag: str | None, environ: dict[str, str] | None = None) -> str | None:
    """Returns the tracking URI a study logs to: ``--mlflow``, else ``MLFLOW_TRACKING_URI``; None
    for neither, or for ``none``."""
    value = flag if flag is not None else (environ if environ is not None else os.environ).get(URI_ENV)
    return None if not value or value.strip().lower() == OFF else value.strip()


def split_credentials(uri: str) -> tuple[str, str | None]:
    """Returns ``(uri without its password, the decoded password or None)``; the password goes to
    MLflow's client through ``MLFLOW_TRACKING_PASSWORD`` (:func:`use_credentials`), so the URI that
    Tune pickles into ``<study>/tune/`` holds none.

    Raises:
        ValueError: For a password in a URI other than http(s) (no variable would take it).
    """
    clean, password = split_password(uri)
    if password is None:
        return uri, None
    if urlsplit(uri).scheme not in ("http", "https"):
        raise ValueError(f"--mlflow {mask(uri)}: a password in a {urlsplit(uri).scheme}: URI would "
                         f"be stored in the study's Tune state; give it through MLflow's own "
                         f"configuration instead")
    return clean, unquote(password)


def use_credentials(uri: str, password: str | None) -> None:
    """Hands the user name of an http(s) ``uri`` and its split-off ``password`` to MLflow's client
    (``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD``, for this process); does nothing without a
    password."""
    if password is None:
        return
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(urlsplit(uri).username or "")
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password


def _without_user(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.username is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def check_server(uri: str, password: str | None, study: str, storage: str, resume: bool,
                 timeout_s: float = 5.0) -> None:
    """Refuses, in seconds and naming the masked URI, a tracking server the study cannot use: mlflow
    not installed, an http(s) server whose ``/health`` does not answer, or an experiment named
    ``study`` that belongs to another study (another storage folder), that was deleted, or that
    has runs while the study is new.

    Raises:
        StudyError: Saying why.
    """
    shown = display(uri, password is not None)
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise StudyError(f"--mlflow {shown}: mlflow is not installed: {INSTALL}") from None
    if urlsplit(uri).scheme in ("http", "https"):
        url = f"{_without_user(uri).rstrip('/')}/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s):
                pass
        except urllib.error.HTTPError as e:
            if e.code not in (401, 403):  # behind a login, but answering
                raise StudyError(f"the MLflow tracking server {shown} answers {e.code} at /health: "
                                 f"is it an MLflow server?") from None
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise StudyError(f"the MLflow tracking server {shown} does not answer: "
                             f"{mask(str(reason))}") from None
    bound_client()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=_without_user(uri))
        experiment = client.get_experiment_by_name(study)
        if experiment is None:
            return
        if experiment.lifecycle_stage != "active":
            raise StudyError(f"MLflow experiment {study!r} at {shown} is deleted: restore it, or "
                             f"delete it for good (mlflow gc), or choose another --name")
        owners = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'study'")
    except MlflowException as e:
        raise StudyError(f"the MLflow tracking server {shown}: {mask(str(e.message))[:500]}") from None
    other = {r.data.tags.get(STORAGE_TAG) for r in owners} - {mask(storage)}
    if other:
        raise StudyError(f"MLflow experiment {study!r} at {shown} holds the study at "
                         f"{sorted(other)[0]}: choose another --name")
    if owners and not resume:
        raise StudyError(f"MLflow experiment {study!r} at {shown} already has this study's runs: "
                         f"pass --resume to continue them, or delete the experiment")


def bound_client() -> None:
    """Sets :data:`CLIENT_ENV` in this process where the user has not set them."""
    for name, value in CLIENT_ENV.items():
        os.environ.setdefault(name, value)


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Returns what an epoch's result logs: the metrics the store keeps, ``time_s`` and ``epoch``."""
    out = ResultStoreCallback._metrics(result)
    if isinstance(result.get("time_s"), (int, float)):
        out["time_s"] = float(result["time_s"])
    out[STEP_METRIC] = float(result["epoch"])
    return out


class Tracker:
    """One study's experiment in MLflow, for the study driver (the only writer of its runs).

    Args:
        uri: The tracking URI without a password (:func:`split_credentials`).
        study: The study's name: the experiment's.
        storage: The study's folder, tagged on the study run.
    """

    def __init__(self, uri: str, study: str, storage: str) -> None:
        bound_client()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=_without_user(uri))
        experiment = self.client.get_experiment_by_name(study)
        self.experiment_id = (experiment.experiment_id if experiment else
                              self.client.create_experiment(study, tags={
                                  STORAGE_TAG: mask(storage), **EXPERIMENT_KIND}))
        self.runs: dict[str, Any] = {}  # trial id -> its Run (as found or created)
        self.status: dict[str, str] = {}  # trial id -> its run's status
        self.last_step: dict[str, int] = {}  # trial id -> highest step logged, once read
        study_run = None
        for run in self._search():
            tags = run.data.tags
            if tags.get(ROLE_TAG) == "study":
                study_run = run
            elif tags.get(TRIAL_TAG):
                self.runs[tags[TRIAL_TAG]] = run
                self.status[tags[TRIAL_TAG]] = run.info.status
        if study_run is None:
            study_run = self.client.create_run(self.experiment_id, run_name="study",
                                               tags={ROLE_TAG: "study", STORAGE_TAG: mask(storage)})
        self.study_run_id = study_run.info.run_id
        self._study_status = study_run.info.status
        self._params_checked: set[str] = set()  # trials whose run has all its parameters

    def start(self) -> None:
        """Marks the study run as running again (a resumed study)."""
        if self._study_status != "RUNNING":
            self.client.update_run(self.study_run_id, status="RUNNING")
            self._study_status = "RUNNING"

    def _search(self) -> Iterable:
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def run_id(self, trial_id: str, params: Callable[[], dict[str, Any]]) -> str:
        """Returns the run of ``trial_id``, created (with ``params()``) if it has none; logs the
        parameters a run found lacks (its creator stopped between creating it and logging them)."""
        from mlflow.entities import Param

        run = self.runs.get(trial_id)
        if run is None:
            run = self.client.create_run(self.experiment_id, run_name=trial_id, tags={
                "mlflow.parentRunId": self.study_run_id, ROLE_TAG: "trial", TRIAL_TAG: trial_id,
                STATUS_TAG: "running"})
            self.runs[trial_id], self.status[trial_id] = run, "RUNNING"
            self.last_step[trial_id] = 0
        if trial_id not in self._params_checked:
            have = run.data.params
            missing = [Param(k, str(v)) for k, v in params().items() if k not in have]
            for i in range(0, len(missing), _BATCH_PARAMS):
                self.client.log_batch(run.info.run_id, params=missing[i:i + _BATCH_PARAMS])
            self._params_checked.add(trial_id)
        return run.info.run_id

    def log_epoch(self, trial_id: str, epoch: int, metrics: dict[str, float],
                  params: Callable[[], dict[str, Any]]) -> bool:
        """Logs ``metrics`` at step ``epoch`` in one batch, unless the run has that step already;
        returns whether it did."""
        from mlflow.entities import Metric

        run_id = self.run_id(trial_id, params)
        if trial_id not in self.last_step:
            history = self.client.get_metric_history(run_id, STEP_METRIC)
            self.last_step[trial_id] = max((m.step for m in history), default=0)
        if epoch <= self.last_step[trial_id]:
            return False
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, int(epoch)) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(v)]
        self.client.log_batch(run_id, metrics=batch)
        self.last_step[trial_id] = int(epoch)
        return True

    def end_trial(self, trial_id: str, status: str, params: Callable[[], dict[str, Any]],
                  error: str | None = None) -> None:
        """Ends the trial's run as the store's ``status`` says (``completed``, ``stopped``,
        ``error``), with ``error`` as a tag; nothing when it has ended so already."""
        from mlflow.entities import RunTag

        want = RUN_STATUS[status]
        if self.status.get(trial_id) == want:
            return
        run_id = self.run_id(trial_id, params)
        tags = [RunTag(STATUS_TAG, status)] + ([RunTag(ERROR_TAG, mask(error)[:5000])] if error else [])
        self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, status=want)
        self.status[trial_id] = want

    def sync(self, store: ResultStore) -> int:
        """Logs what ``store`` has and MLflow lacks: the epochs of every trial, and the ends of those
        that ended. Returns how many epochs it logged. A run that has ended as the store says is
        complete (its epochs are logged before its end) and is not read again."""
        epochs, trials = store.read_epochs(), store.read_trials()
        ends = dict(zip(trials["trial_id"], trials["status"])) if len(trials) else {}
        errors = dict(zip(trials["trial_id"], trials["error"])) if len(trials) else {}
        logged = 0
        for trial_id in sorted(set(ends) | set(epochs["trial_id"] if len(epochs) else ())):
            end = ends.get(trial_id)
            if end in RUN_STATUS and self.status.get(trial_id) == RUN_STATUS[end]:
                continue
            rows = epochs[epochs["trial_id"] == trial_id] if len(epochs) else epochs
            source = rows if len(rows) else trials[trials["trial_id"] == trial_id]
            params = _params_of_row(source.iloc[-1].to_dict())
            for row in rows.sort_values("epoch").to_dict("records"):
                logged += self.log_epoch(trial_id, int(row["epoch"]), _metrics_of_row(row), params)
            if end in RUN_STATUS:
                error = errors.get(trial_id)
                self.end_trial(trial_id, end, params, error if isinstance(error, str) else None)
        return logged

    def finish(self, directory: str) -> list[str]:
        """Logs the study's ``study.json`` and ``report.html`` (those that exist) to the study run
        and ends it; returns the artifacts' names."""
        names = []
        for name in (META_FILE, "report.html"):
            text = read_text(f"{directory}/{name}")
            if text is not None:
                self.client.log_text(self.study_run_id, text, name)
                names.append(name)
        self.client.set_terminated(self.study_run_id, status="FINISHED")
        return names


def _params_of_row(row: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    params = {k: v for k, v in row.items() if is_param_column(k) and not _missing(v)}
    return lambda: params


def _metrics_of_row(row: dict[str, Any]) -> dict[str, float]:
    out = {k: float(v) for k, v in row.items()
           if (k not in EPOCH_COLUMNS or k == "time_s") and not is_param_column(k)
           and isinstance(v, (int, float)) and not isinstance(v, bool) and not _missing(v)}
    out[STEP_METRIC] = float(row["epoch"])
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _failures() -> tuple[type[BaseException], ...]:
    """What a tracking server that fails raises: MLflow's errors, requests' and the OS's."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.RequestException, OSError)


class MlflowCallback(Callback):
    """Logs every trial's epochs and end to MLflow from the study driver (see the module docstring).

    Tune calls it after :class:`~transcenter.platform.callbacks.ResultStoreCallback`, so parquet
    has an epoch before MLflow does. The client is made when the study starts (never pickled with
    Tune's state); after the first failure of the server it logs nothing more in this run of the
    driver, and :func:`sync_study` fills in at the end.

    Args:
        uri: The tracking URI without a password.
        store: The study's result store (read by the sync when the study starts).
        directory: The study's folder.
        total_epochs: Epochs of a completed trial (fewer: stopped early).
        params_of: A trial's searched values -> its hyperparameters, as the store keeps them.
    """

    def __init__(self, uri: str, store: ResultStore, directory: str, total_epochs: int,
                 params_of: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.uri = uri
        self.store = store
        self.directory = directory
        self.total_epochs = total_epochs
        self.params_of = params_of
        self._tracker: Tracker | None = None
        self._failed = False

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tracker": None}

    def _do(self, what: str, action: Callable[[Tracker], Any]) -> None:
        if self._failed:
            return
        try:
            if self._tracker is None:
                self._tracker = Tracker(self.uri, self.store.study, self.directory)
            action(self._tracker)
        except _failures() as e:
            self._failed = True
            logger.warning("MLflow %s: %s: %s; nothing more is logged until the end of the study, "
                           "which fills MLflow in from the result store", mask(self.uri), what,
                           mask(str(e))[:500])

    def setup(self, **info) -> None:
        # After --resume's reconcile: what parquet has that MLflow missed while the driver was down.
        self._do("sync", lambda t: (t.start(), t.sync(self.store)))

    def _trial(self, trial) -> tuple[str, Callable[[], dict[str, Any]]]:
        key, searched = split_config(trial.config)
        return key, lambda: self.params_of(searched)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "epoch" not in result:
            return
        key, params = self._trial(trial)
        self._do(f"{key} epoch {result['epoch']}",
                 lambda t: t.log_epoch(key, int(result["epoch"]), epoch_metrics(result), params))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        epoch = int(last.get("epoch", 0))
        status = ended_status(epoch, self.total_epochs)
        key, params = self._trial(trial)

        def end(t: Tracker) -> None:
            if epoch:
                t.log_epoch(key, epoch, epoch_metrics(last), params)
            t.end_trial(key, status, params)
        self._do(f"{key} end", end)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        message = trial_error(trial)
        key, params = self._trial(trial)
        self._do(f"{key} error", lambda t: t.end_trial(key, "error", params, message))


def sync_study(uri: str, store: ResultStore, directory: str) -> None:
    """Brings the study's MLflow runs up to its result store (epochs, trial ends); a server that
    fails gets a warning (a later ``--resume`` syncs again), not an error: the study itself is in
    the store."""
    try:
        logged = Tracker(uri, store.study, directory).sync(store)
    except _failures() as e:
        logger.warning("MLflow %s: not synced with the result store (%s); run the study again with "
                       "--resume to sync it", mask(uri), mask(str(e))[:500])
        return
    if logged:
        logger.info("MLflow: %d epoch(s) logged from the result store", logged)


def finish_study(uri: str, store: ResultStore, directory: str) -> list[str] | None:
    """Logs ``study.json`` and ``report.html`` to the study run and ends it; returns the artifacts'
    names, or None when the server failed (with a warning)."""
    try:
        return Tracker(uri, store.study, directory).finish(directory)
    except _failures() as e:
        logger.warning("MLflow %s: study run not finished (%s)", mask(uri), mask(str(e))[:500])
        return None
