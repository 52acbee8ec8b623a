"""Jobs: ordered per deployment, parallel across deployments.

Each key (normally ``(tenant, deployment)``) has a FIFO; one worker drains a key's
FIFO at a time, so jobs of one deployment never overlap, while a thread pool runs
different keys side by side (a slow host or a long boot does not stall others).
A job may be marked *interruptible* (VM/service start and reboot): only undeploy
sets its ``cancel`` event, and the job's waits return early when it is set.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Job:
    key: Hashable
    name: str
    fn: Callable[[Job], Any]
    interruptible: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future[Any] = field(default_factory=Future)


class JobQueue:
    def __init__(self, workers: int = 32) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine-job")
        self._lock = threading.Lock()
        self._queues: dict[Hashable, deque[Job]] = {}
        self._running: dict[Hashable, Job] = {}
        self._idle = threading.Condition(self._lock)
        self._closed = False

    def submit(
        self, key: Hashable, name: str, fn: Callable[[Job], Any], *, interruptible: bool = False
    ) -> Job:
        job = Job(key, name, fn, interruptible)
        with self._lock:
            if self._closed:
                job.future.cancel()
                return job
            queue = self._queues.setdefault(key, deque())
            queue.append(job)
            start = len(queue) == 1 and key not in self._running
        if start:
            self._pool.submit(self._drain, key)
        return job

    def interrupt(self, key: Hashable) -> None:
        """Cancel the running and queued interruptible jobs of ``key`` (for undeploy)."""
        with self._lock:
            jobs = list(self._queues.get(key, ()))
            running = self._running.get(key)
        if running is not None:
            jobs.append(running)
        for job in jobs:
            if job.interruptible:
                job.cancel.set()

    def busy(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._running or bool(self._queues.get(key))

    def _drain(self, key: Hashable) -> None:
        while True:
            with self._lock:
                queue = self._queues.get(key)
                if not queue:
                    self._queues.pop(key, None)
                    self._running.pop(key, None)
                    self._idle.notify_all()
                    return
                job = queue.popleft()
                self._running[key] = job
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                job.future.set_result(job.fn(job))
            except BaseException as exc:
                log.exception("job %s for %s failed", job.name, key)
                job.future.set_exception(exc)

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: not self._queues and not self._running, timeout)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            for queue in self._queues.values():
                for job in queue:
                    job.cancel.set()
                    job.future.cancel()
                queue.clear()
            for job in self._running.values():
                job.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
