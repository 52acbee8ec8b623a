"""Jobs: one worker per deployment, coalesced, with waits that hold no worker slot.

Each key (normally ``(tenant, deployment)``) has a FIFO drained by one worker
thread at a time, so jobs of one deployment never overlap, while different keys
run side by side. A worker thread exists only while its key has work.

*Slots* bound the work done at once (``workers``, 32 by default): a job holds a
slot while it runs, and gives it back while it waits -- for a guest to boot, an
ACPI shutdown, a recovery_wait_time, an image registration -- through
:meth:`Job.wait`, :func:`idle` or :func:`waiting`.
So 32 deployments waiting for slow guests do not starve a 33rd deployment or an
image registration: a waiting job costs a parked thread, not a slot.

*Coalescing* (kopf's model): a job submitted with a ``kind`` replaces a queued,
not yet running job of the same key and kind (the queued job takes the new body and
keeps its place), so ten reconciles while a deployment is busy leave at most one
pending. Level-triggered jobs (reconcile) read the latest desired and observed
state when they run, so the replaced body loses nothing.

A job may be *interruptible* (VM/service start and reboot, deploy): only undeploy
sets its ``cancel`` event, and its waits return early. :meth:`JobQueue.cancel_queued`
drops queued jobs (their ``on_cancel`` reports the outcome of the request they
carried). A job with a ``scope`` holds its deployment (``""``) or one VM (the
generated name) until it ends: the engine refuses other requests for it meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_local = threading.local()


@dataclass(eq=False)
class Job:
    key: Hashable
    name: str
    fn: Callable[[Job], Any]
    interruptible: bool = False
    kind: str | None = None  # coalescing: a queued job of the same kind is replaced
    scope: str | None = None  # held while queued or running ("" the deployment, or a VM)
    on_cancel: Callable[[], None] | None = None  # dropped before it ran (undeploy)
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future[Any] = field(default_factory=Future)
    queue: JobQueue | None = None

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` without holding a slot; True when cancelled."""
        return idle(seconds, self.cancel)


@contextmanager
def waiting() -> Iterator[None]:
    """Give the current job's slot back for the block (a wait on something another
    job does, e.g. an image registration); outside a job it does nothing."""
    queue: JobQueue | None = getattr(_local, "queue", None)
    if queue is not None:
        queue._slots.release()
    try:
        yield
    finally:
        if queue is not None:
            queue._slots.acquire()


def idle(seconds: float, cancel: threading.Event | None = None) -> bool:
    """Sleep (or wait for ``cancel``) for ``seconds``; called from a job, the job's
    slot is given back for the wait. True when ``cancel`` was set."""
    with waiting():
        if cancel is not None:
            return cancel.wait(max(0.0, seconds))
        time.sleep(max(0.0, seconds))
        return False


class JobQueue:
    def __init__(self, workers: int = 32) -> None:
        self._slots = threading.Semaphore(workers)
        self._lock = threading.Lock()
        self._queues: dict[Hashable, deque[Job]] = {}
        self._running: dict[Hashable, Job] = {}
        self._threads: set[threading.Thread] = set()
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self.submitted = 0  # jobs queued (tests, benchmarks)
        self.coalesced = 0  # of those, merged into a queued one

    def submit(
        self,
        key: Hashable,
        name: str,
        fn: Callable[[Job], Any],
        *,
        interruptible: bool = False,
        kind: str | None = None,
        scope: str | None = None,
        on_cancel: Callable[[], None] | None = None,
    ) -> Job:
        job = Job(key, name, fn, interruptible, kind, scope, on_cancel, queue=self)
        with self._lock:
            if self._closed:
                job.future.cancel()
                return job
            self.submitted += 1
            queue = self._queues.setdefault(key, deque())
            if kind is not None:
                for queued in queue:
                    if queued.kind == kind:
                        queued.name, queued.fn = name, fn
                        queued.interruptible = queued.interruptible or interruptible
                        self.coalesced += 1
                        return queued
            queue.append(job)
            start = len(queue) == 1 and key not in self._running
            if start:
                thread = threading.Thread(
                    target=self._drain, args=(key,), name=f"engine-job {key}", daemon=True
                )
                self._threads.add(thread)
        if start:
            thread.start()
        return job

    def interrupt(self, key: Hashable) -> None:
        """Set ``cancel`` on the running and queued interruptible jobs of ``key``."""
        with self._lock:
            jobs = list(self._queues.get(key, ()))
            running = self._running.get(key)
        if running is not None:
            jobs.append(running)
        for job in jobs:
            if job.interruptible:
                job.cancel.set()

    def cancel_queued(self, key: Hashable) -> list[Job]:
        """Drop every queued job of ``key`` (each one's ``on_cancel`` runs) and
        interrupt the running one if it is interruptible (undeploy)."""
        with self._lock:
            queue = self._queues.get(key)
            dropped = list(queue) if queue else []
            if queue:
                queue.clear()
            running = self._running.get(key)
        if running is not None and running.interruptible:
            running.cancel.set()
        for job in dropped:
            job.cancel.set()
            job.future.cancel()
            if job.on_cancel is not None:
                try:
                    job.on_cancel()
                except Exception:
                    log.exception("on_cancel of %s for %s failed", job.name, key)
        return dropped

    def busy(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._running or bool(self._queues.get(key))

    def jobs(self, key: Hashable) -> list[Job]:
        """The running job of ``key`` (first) and its queued ones."""
        with self._lock:
            running = self._running.get(key)
            queued = list(self._queues.get(key, ()))
        return ([running] if running is not None else []) + queued

    def counts(self) -> tuple[int, int]:
        """(queued, running) jobs over every key (for metrics)."""
        with self._lock:
            return sum(len(q) for q in self._queues.values()), len(self._running)

    def pending(self, key: Hashable) -> int:
        with self._lock:
            return len(self._queues.get(key, ()))

    def _drain(self, key: Hashable) -> None:
        _local.queue = self
        try:
            while True:
                with self._lock:
                    queue = self._queues.get(key)
                    if not queue:
                        self._queues.pop(key, None)
                        self._running.pop(key, None)
                        self._threads.discard(threading.current_thread())
                        self._idle.notify_all()
                        return
                    job = queue.popleft()
                    self._running[key] = job
                if not job.future.set_running_or_notify_cancel():
                    continue
                self._slots.acquire()
                try:
                    job.future.set_result(job.fn(job))
                except BaseException as exc:
                    log.exception("job %s for %s failed", job.name, key)
                    job.future.set_exception(exc)
                finally:
                    self._slots.release()
        finally:
            _local.queue = None

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: not self._queues and not self._running, timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._closed = True
            for queue in self._queues.values():
                for job in queue:
                    job.cancel.set()
                    job.future.cancel()
                queue.clear()
            for job in self._running.values():
                job.cancel.set()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
