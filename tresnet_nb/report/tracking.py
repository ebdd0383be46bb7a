"""Experiment tracking: TensorBoard event files under ``OUTPUT_DIR/tensorboard`` always, and MLflow when the
``TRACKING`` parameter or ``MLFLOW_TRACKING_URI`` names a store (a local folder or a tracking server).

Only rank 0 of a data-parallel job writes. What is logged is the run's configuration and training options, one
point per trained epoch, the final record and the run's files; nothing from the environment. A value that holds a
secret (a parameter whose name says token, key, secret or password, a URL's password, or the value of such an
environment variable, e.g. HF_TOKEN or KAGGLE_KEY) is replaced by ``***`` before it leaves the process, and a file
that holds one is not uploaded. A tracking server that fails is retried a bounded number of times within seconds
(MLflow's own retries, capped here unless set), then the run goes on with a warning and logs no more to it: the
files in OUTPUT_DIR and the TensorBoard events are complete either way.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastai.callback.core import Callback

from ..hints import warn
from ..runtime import is_main
from .publish import publish_hint
from .trial import TRIAL_ENV, TrialStopped, report_epoch

if TYPE_CHECKING:
    from fastai.learner import Learner

    from ..config import RunConfig

TRACKING_ENV = "MLFLOW_TRACKING_URI"
WEIGHTS_ENV = "TRESNET_NB_TRACK_WEIGHTS"  # "1": upload model.safetensors as well (hundreds of MB for TResNet-L)
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
# MLflow retries a failed request up to 7 times with exponential back-off (minutes in all); a run should lose seconds
# to a server that went away, not minutes. Set here only when the user has not set them.
RETRY_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
SECRET_NAME = re.compile(r"token|secret|passw|key|credential|auth", re.IGNORECASE)
REDACTED = "***"
ARTIFACTS = ("metrics.json", "run_config.json", "calibration.json", "submission.csv")


def secret_values() -> list[str]:
    """Values of this process's environment variables whose names say they hold a secret (6 characters or more)."""
    return sorted({v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 6}, key=len, reverse=True)


def redact(value: Any, name: str = "") -> str:
    """``value`` as text with every secret in it replaced by ``***``: all of it when ``name`` says it is a secret,
    a URL's password, and the value of any secret environment variable."""
    text = str(value)
    if name and SECRET_NAME.search(name) and value is not None:
        return REDACTED
    text = re.sub(r"(//[^/@:\s]*):[^/@\s]*@", rf"\1:{REDACTED}@", text)
    for secret in secret_values():
        text = text.replace(secret, REDACTED)
    return text


def flat_params(cfg: RunConfig, options: dict[str, Any] | None) -> dict[str, str]:
    """The run's parameters for MLflow: the RunConfig (its training options as ``options.KEY``, the notebook's own
    parameters as ``notebook.KEY``) and the learner's settings (``option.KEY``), secrets redacted."""
    params = {k: v for k, v in cfg.to_dict().items() if k not in ("options", "notebook_params")}
    params |= {f"options.{k}": v for k, v in cfg.options.to_dict().items()}
    params |= {f"notebook.{k}": v for k, v in cfg.notebook_params.items()}
    params |= {f"option.{k}": v for k, v in (options or {}).items()}
    return {k: redact(v, k)[:6000] for k, v in sorted(params.items())}


def tracking_uri(cfg: RunConfig) -> str | None:
    """The MLflow store of the run: TRACKING, else MLFLOW_TRACKING_URI, else None (MLflow off). A plain folder
    becomes a SQLite store in it (``FOLDER/mlflow.db``, artifacts in ``FOLDER/artifacts``): MLflow 3 refuses its old
    folder-of-files store."""
    uri = cfg.tracking or os.environ.get(TRACKING_ENV) or None
    if uri is None or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri):
        return uri
    folder = Path(uri).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """Where a new experiment of a SQLite store in a folder keeps its files (beside the database); None for a
    server, which decides itself."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///") :]).parent / "artifacts")
    return None


def require_mlflow() -> Any:
    """The mlflow module, or an ImportError that says how to install it."""
    try:
        import mlflow
    except ImportError:
        raise ImportError(
            "Tracking to MLflow was asked for (TRACKING or MLFLOW_TRACKING_URI is set) but mlflow is not installed. "
            "Fix: pip install 'tresnet-nb[tracking]' (or pip install mlflow), or unset TRACKING/MLFLOW_TRACKING_URI"
        ) from None
    return mlflow


class Tracker:
    """One run's tracking: TensorBoard events in ``OUTPUT_DIR/tensorboard`` and, when a store is named, an MLflow
    run. In a process other than rank 0 it does nothing. Build it with :func:`track`."""

    def __init__(self, cfg: RunConfig, options: dict[str, Any] | None = None) -> None:
        self.cfg, self.main, self.epochs = cfg, is_main(), 0
        self.uri = tracking_uri(cfg) if self.main else None
        self.client: Any = None
        self.run_id: str | None = None
        self.failure: str | None = None
        self.finished = False
        self.writer: Any = None
        if not self.main:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(cfg.out / "tensorboard"))
        self.writer.add_text("config", "\n".join(f"{k}: {v}" for k, v in flat_params(cfg, options).items()), 0)
        if self.uri is not None:
            require_mlflow()
            for name, value in RETRY_LIMITS.items():
                os.environ.setdefault(name, value)
            self._mlflow(self._start, options)

    def _mlflow(self, work: Any, *args: Any) -> Any:
        """Run ``work`` against MLflow unless it is off or has failed; a failure warns once and turns MLflow off."""
        if self.uri is None or self.failure is not None:
            return None
        try:
            return work(*args)
        except Exception as err:  # any failure of the store: the run itself must go on
            self.failure = (
                f"{type(err).__name__}: {redact(str(err).strip().splitlines()[0] if str(err).strip() else '')}"
            )
            warn(
                f"MLflow tracking at {redact(self.uri)} failed ({self.failure}); the run goes on without it. Its "
                f"files in {self.cfg.out} and the TensorBoard events are complete; nothing more goes to MLflow.",
                stacklevel=4,
            )
            return None

    def _start(self, options: dict[str, Any] | None) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        name = os.environ.get(EXPERIMENT_ENV) or f"tresnet-nb/{self.cfg.notebook}"
        experiment = self.client.get_experiment_by_name(name)
        root = artifact_root(self.uri)
        location = None if root is None else f"{root}/{name.replace('/', '_')}"
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name, location)
        tags = {
            "notebook": self.cfg.notebook,
            "dataset": self.cfg.dataset,
            "arch": self.cfg.arch,
            "preset": self.cfg.preset,
            "config_key": self.cfg.key,
        }
        trial = os.environ.get(TRIAL_ENV)
        if trial:
            tags["sweep_trial"] = str(json.loads(trial)["number"])
        run = self.client.create_run(
            experiment_id,
            run_name=f"{self.cfg.notebook}-{self.cfg.key}",
            tags={k: redact(v, k) for k, v in tags.items()},
        )
        self.run_id = run.info.run_id
        atexit.register(self.end, "FAILED")  # a notebook that fails before finish() leaves no run marked RUNNING
        params = [Param(k, v) for k, v in flat_params(self.cfg, options).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a request
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log_epoch(self, values: dict[str, float]) -> None:
        """One point per metric at the next epoch (1, 2, ...): TensorBoard, and MLflow when on."""
        if not self.main:
            return
        self.epochs += 1
        for name, value in values.items():
            self.writer.add_scalar(name, value, self.epochs)
        self.writer.flush()

        def send() -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(redact(k), float(v), now, self.epochs) for k, v in values.items()]
            self.client.log_batch(self.run_id, metrics=metrics)

        self._mlflow(send)

    def finish(self, record: dict[str, Any]) -> None:
        """Log the final record (its numbers as metrics, its facts as tags) and the run's files, then end the run."""
        if not self.main:
            return
        numbers = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for name, value in numbers.items():
            self.writer.add_scalar(f"final/{name}", value, self.epochs)
        self.writer.flush()
        self._mlflow(self._finish, record, numbers)
        self.writer.close()

    def end(self, status: str) -> None:
        """End an MLflow run that did not finish (``status`` 'KILLED' for a pruned trial, 'FAILED' for a run that
        stopped with an error); nothing for a finished run, or when MLflow is off or has failed."""
        if self.run_id is not None and not self.finished:
            self.finished = True
            self._mlflow(self.client.set_terminated, self.run_id, status)
        if self.writer is not None:
            self.writer.flush()

    def _finish(self, record: dict[str, Any], numbers: dict[str, float]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(f"final.{k}", v, now, self.epochs) for k, v in numbers.items()]
        tags = [
            RunTag(k, redact(record[k], k)) for k in ("pretrained", "fixture_data", "weights", "device") if k in record
        ]
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags)
        files = [self.cfg.out / n for n in ARTIFACTS] + sorted(self.cfg.out.glob("*.png"))
        if os.environ.get(WEIGHTS_ENV) == "1":
            files.append(self.cfg.out / "model.safetensors")
        secrets = secret_values()
        for path in files:
            if not path.is_file():
                continue
            if path.suffix != ".safetensors" and any(s.encode() in path.read_bytes() for s in secrets):
                warn(f"{path.name} holds the value of a secret environment variable: not uploaded", stacklevel=3)
                continue
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")
        self.finished = True

    def where(self) -> str:
        """Where the run is tracked, and the command that publishes it (what the notebooks print at their end)."""
        lines = [f"TensorBoard: tensorboard --logdir {self.cfg.out / 'tensorboard'}"]
        if not self.main:
            lines = ["tracking: written by rank 0"]
        elif self.uri is None:
            lines.append("MLflow: off (set TRACKING or MLFLOW_TRACKING_URI to a folder or a tracking server)")
        elif self.failure is not None:
            lines.append(
                f"MLflow: FAILED at {redact(self.uri)} ({self.failure}); the run's files are in {self.cfg.out}"
            )
        else:
            lines.append(
                f"MLflow: run {self.run_id} at {redact(self.uri)} (mlflow ui --backend-store-uri {redact(self.uri)})"
            )
        lines.append(f"publish: {publish_hint(self.cfg.out)}")
        return "\n".join(lines)


class TrackEpochs(Callback):
    """Send each trained epoch's losses and metrics to a :class:`Tracker` (and, in a sweep, to its trial)."""

    order = 61  # after the Recorder has the epoch's values, beside EpochLog

    def __init__(self, tracker: Tracker) -> None:
        self.tracker, self.trained = tracker, False

    def before_epoch(self) -> None:
        self.trained = False

    def before_train(self) -> None:
        self.trained = True  # get_preds runs validation-only epochs; those are not epochs of training

    def after_epoch(self) -> None:
        if not self.trained:
            return
        names = self.recorder.metric_names[1:-1]
        row = self.recorder.values[-1] if self.recorder.values else []
        values = {n: float(v) for n, v in zip(names, row, strict=False) if v is not None}
        self.tracker.log_epoch(values)
        if self.tracker.main:
            try:
                report_epoch(self.tracker.cfg, values, self.tracker.epochs)
            except TrialStopped:
                self.tracker.end("KILLED")  # pruned by the sweep: the MLflow run says so
                raise


def track(cfg: RunConfig, learn: Learner | None = None) -> Tracker:
    """Start tracking the run of ``cfg``: TensorBoard always, MLflow when TRACKING or MLFLOW_TRACKING_URI names a
    store; with ``learn``, its options are logged and every trained epoch is sent (:class:`TrackEpochs`)."""
    tracker = Tracker(cfg, None if learn is None else learn.plan.settings())
    if learn is not None:
        learn.add_cb(TrackEpochs(tracker))
    return tracker
