"""A dataset whose items say which process made them, for DataLoader workers started by spawn or forkserver
(they import this module fresh, so it imports only the standard library)."""

from __future__ import annotations

import os

MARK = "ARPO_SFT_TEST_WORKER_INIT"


def mark_worker(worker_id: int) -> None:
    """A loader's own worker_init_fn: records, for the items to report, that it ran and the threads then."""
    os.environ[MARK] = f"{worker_id} {len(os.listdir('/proc/self/task'))}"


class WorkerPids:
    """`length` items: (pid of the process that fetched it, its worker id and its threads at mark_worker)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        worker_id, threads = os.environ.get(MARK, "-1 -1").split()
        return os.getpid(), int(worker_id), int(threads)
