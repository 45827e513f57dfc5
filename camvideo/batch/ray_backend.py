"""Ray backend of ``camvideo batch --ray [ADDRESS]``: one Ray task per video.

Requirements:
    - Ray is an optional extra: ``pip install 'camvideo[ray]'`` (imported only here, on
      use; a missing Ray is a one-line :class:`~camvideo.errors.OptionError`).
    - camvideo (and the model's weights) installed on every node.
    - ``IN_DIR`` and ``OUT_DIR`` on a filesystem every node sees **at the same path** (NFS,
      a cluster filesystem, a bind mount): tasks read and write the files in place, only
      paths travel through Ray. Resume, the stale-temporary-file sweep and the containment
      checks run on the driver, against the same paths.

Each task declares what it needs: ``num_gpus`` (1 by default, a fraction lets several
videos share a GPU) when the cluster has GPUs and ``--device`` is not ``cpu``, else only
``num_cpus``. A worker process loads the model once and keeps it for the next tasks. At
most twice as many tasks as the cluster can run at once are submitted, more as they end.
Failures come back as records like on one machine; a task whose worker died is retried
once, then recorded as failed.

Stopping (Ctrl-C, or ``stop``) is cooperative: a small actor holds a flag that every task
polls; a task that sees it aborts its file (temporary files removed) and returns an
``interrupted`` record (``pending`` if it had not begun), and the driver waits for them.
``ray.cancel`` is not used: in Ray 2.x cancelling a task that is just completing can
crash the driver (a ``RAY_CHECK`` "Tried to complete task that was not pending", seen
with Ray 2.60).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import ModelError, OptionError, first_line

if TYPE_CHECKING:
    from ..options import Options
    from .files import Job
    from .jobs import Tracker

log = logging.getLogger(__name__)

_MODELS: dict[tuple, Any] = {}  # per worker process: (name, weights, labels, device) → model
_STOP_WAIT_S = 60.0   # how long the driver waits for stopped tasks to clean up
_POLL_S = 0.25        # how often a task looks at the stop flag


def import_ray() -> Any:
    """``import ray``, or an :class:`OptionError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise OptionError("ray needs Ray, an optional extra: "
                          "pip install 'camvideo[ray]'", option="ray") from None
    return ray


class StopFlag:
    """The batch's stop flag, run as a Ray actor (``num_cpus=0``) that tasks poll."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


def _record(job: "Job", status: str, reason: str, **extra: Any) -> dict:
    return {"path": str(job.input), "output": str(job.output), "status": status,
            "reason": reason, "frames": 0, "seconds": 0.0, **extra}


def _task(job: "Job", opts: "Options", device: str, flag: Any) -> dict:
    """Body of one Ray task (runs on a worker): annotate ``job``, return its record."""
    import ray

    from ..model.registry import load_model
    from .files import remove_own_partials
    from .jobs import process_job

    if ray.get(flag.is_set.remote()):
        return _record(job, "pending", "not started")
    stop, finished = threading.Event(), threading.Event()

    def watch() -> None:
        while not finished.wait(_POLL_S):
            try:
                if ray.get(flag.is_set.remote(), timeout=30):
                    stop.set()
                    return
            except Exception:  # noqa: BLE001 - driver gone: Ray ends this task itself
                return

    if device == "auto":
        device = "cuda" if ray.get_gpu_ids() else "cpu"
    key = (opts.model, opts.weights, opts.labels, opts.fine_maps, device)
    watcher = threading.Thread(target=watch, name="camvideo-stop-watch", daemon=True)
    watcher.start()
    try:
        model = _MODELS.get(key)
        if model is None:
            model = _MODELS[key] = load_model(opts.model, opts.weights, opts.labels,
                                              device=device, fine=opts.fine_maps)
        return process_job(job, model, opts.replace(device=device), stop=stop).as_dict()
    except ModelError as e:
        return _record(job, "failed", str(e), fatal=True)
    except KeyboardInterrupt:
        # A SIGINT sent to the worker itself (Ctrl-C in a terminal reaches the whole
        # process group): annotate cleans up, unless a repeated interrupt cut it short.
        for _ in range(5):
            try:
                remove_own_partials(job)
                break
            except KeyboardInterrupt:
                continue
        raise
    finally:
        finished.set()


def _resources(ray: Any, device: str, gpus: float, cpus: float) -> tuple[dict, str, int]:
    """Task resources, the device tasks use, and how many tasks fit in the cluster."""
    if not 0 < gpus <= 8:
        raise OptionError(f"ray_gpus must be in (0, 8], got {gpus}", option="ray_gpus")
    if not 0 < cpus <= 256:
        raise OptionError(f"ray_cpus must be in (0, 256], got {cpus}", option="ray_cpus")
    res = ray.cluster_resources()
    have_gpu = res.get("GPU", 0) > 0
    dev = (device or "auto").lower()
    if dev.startswith("cuda") and not have_gpu:
        raise OptionError("device cuda asked for, but the Ray cluster has no GPU",
                          option="device")
    if dev != "cpu" and have_gpu:
        # Ray sets CUDA_VISIBLE_DEVICES per task: the task's GPU is always cuda:0.
        slots = min(res["GPU"] / gpus, res.get("CPU", 1) / cpus)
        return {"num_gpus": gpus, "num_cpus": cpus}, "cuda", max(1, int(slots))
    return {"num_cpus": cpus}, "cpu", max(1, int(res.get("CPU", 1) / cpus))


def run_ray(todo: list["Job"], opts: "Options", tracker: "Tracker", *,
            address: str | None, gpus: float, cpus: float,
            stop: threading.Event) -> None:
    """Run ``todo`` as Ray tasks, feeding ``tracker`` as they finish.

    Connects to ``address`` (``ray.init`` semantics; None or empty: the running instance,
    ``RAY_ADDRESS``, or a new local one) unless Ray is already initialised in this
    process; a Ray it started is shut down at the end.
    """
    from .files import Record

    ray = import_ray()
    started = False
    if not ray.is_initialized():
        log.info("connecting to Ray%s", f" at {address}" if address else "")
        try:
            ray.init(address=address or None, logging_level=logging.WARNING,
                     log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise OptionError(f"cannot connect to Ray at {address or 'auto'}: "
                              f"{first_line(e)}") from None
        started = True
    try:
        resources, device, slots = _resources(ray, opts.device, gpus, cpus)
        log.info("Ray: %d tasks, each %s, %d at once", len(todo), resources, slots)
        remote = ray.remote(_task).options(max_retries=1, **resources)
        flag = ray.remote(num_cpus=0)(StopFlag).remote()
        queued = list(todo)
        inflight: dict[Any, "Job"] = {}

        def submit() -> None:
            while queued and len(inflight) < 2 * slots:
                job = queued.pop(0)
                tracker.sent(job)  # a stop leaves it interrupted, not pending
                inflight[remote.remote(job, opts, device, flag)] = job

        def gather(refs: list) -> None:
            # a job leaves ``inflight`` only once recorded: a Ctrl-C landing in between
            # would otherwise lose a finished file's record (run_batch would then call
            # a file that is in place "interrupted"); the stop gathers it again
            for ref in refs:
                job = inflight[ref]
                rec = _result(ray, ref, job)
                if rec.pop("fatal", False):
                    del inflight[ref]
                    raise ModelError(rec["reason"])
                if rec["status"] != "interrupted" and str(job.input) not in \
                        tracker.records:  # "interrupted": recorded so by run_batch
                    tracker.finished(Record(**rec), job.rel)
                del inflight[ref]

        try:
            submit()
            while inflight and not stop.is_set():
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                gather(ready)
                submit()
        finally:
            if inflight:
                _stop_tasks(ray, flag, inflight, gather)
    finally:
        if started:
            ray.shutdown()


def _result(ray: Any, ref: Any, job: "Job") -> dict:
    try:
        return ray.get(ref)
    except Exception as e:  # noqa: BLE001 - a task that raised or whose worker died
        cause = getattr(e, "cause", None) or e
        log.debug("Ray task for %s failed", job.input, exc_info=True)
        return _record(job, "failed", f"Ray task failed: {type(cause).__name__}: "
                                      f"{first_line(cause)}")


def _stop_tasks(ray: Any, flag: Any, inflight: dict, gather: Any) -> None:
    """Raise the stop flag and wait for the tasks in flight to end (each aborts its file
    and removes its temporary files); what they finished meanwhile is still recorded."""
    flag.set.remote()
    deadline = time.monotonic() + _STOP_WAIT_S
    while inflight and time.monotonic() < deadline:
        ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0.5)
        try:
            gather(ready)
        except ModelError:
            pass  # already stopping
    if inflight:
        log.warning("%d Ray tasks did not stop within %.0f s", len(inflight), _STOP_WAIT_S)
