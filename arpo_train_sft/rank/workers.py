"""What a rank's DataLoader workers run first: take SIGTERM from their rank only, so a SIGTERM stop can save.

torchrun stops a rank with `os.killpg` on the rank's session, which holds its DataLoader workers too.
torch lets a worker end quietly on a SIGTERM from its parent and dies of any other, and the rank then fails
on its next batch ("DataLoader worker ... is killed by signal: Terminated") before the step every rank
agreed to save at.

Ignoring SIGTERM outright is not enough: a rank that fails (a peer's connection closed) leaves its loader
to interpreter exit, where multiprocessing ends daemon workers with SIGTERM and waits for them without a
limit, so an ignoring worker would hang the rank, its torchrun and its launcher for good. So the worker
blocks SIGTERM and one thread takes each one with its sender: from the rank, the worker exits as torch's
own handler does; from anyone else, it is dropped. torchrun's SIGKILL after ARPO_SFT_STOP_TIMEOUT still
reaches it, and torch's watchdog ends it once its rank is gone.

That holds for a worker that has one thread when its init function runs: a forked one, as DataLoader
workers are under Python 3.11 on Linux (neither LLaMA-Factory nor transformers sets another start method).
One started by spawn or forkserver already runs OpenBLAS's threads (numpy's import), which do not block
SIGTERM; a SIGTERM one of them takes goes to torch's handler, as without this module: quiet exit for the
rank's, death for anyone else's.

Workers started by spawn or forkserver import this module fresh to unpickle `start_worker`: it imports
only the standard library.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable


def start_worker(then: Callable[[int], None] | None, worker_id: int) -> None:
    """A DataLoader worker_init_fn: take SIGTERM from the rank only, then run the loader's own (`then`)."""
    # Threads inherit the mask: every later one (the queue's feeder) blocks SIGTERM too, so it is only
    # ever taken by the thread below. A forked worker has no other thread yet (tests/rank/test_preempt.py).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_sigterm_from, args=(os.getppid(),), name="sigterm", daemon=True).start()
    if then is not None:
        then(worker_id)


def _sigterm_from(rank: int) -> None:
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != rank:
        pass
    os._exit(0)  # as torch's handler does for its parent: a non-zero code would read as a crash there
