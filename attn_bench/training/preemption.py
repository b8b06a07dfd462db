"""Cluster time limits and preemption: checkpoint at the next sync point, then requeue.

Before a SLURM job's time limit (``signal_delay_s`` ahead) or when it is preempted, SLURM sends
SIGUSR2. In a submitit job (``hydra/launcher=slurm`` or ``local``) submitit's handler for it asks
the callable for a checkpoint - Hydra's launcher answers "resubmit me with the same arguments" -,
requeues the job and exits, wherever the training loop happened to be. Here that handler is kept
but deferred: the signal only sets a flag, the trainer saves a complete checkpoint at its next sync
point (all ranks agree through one collective), and then hands over to submitit's handler, which
requeues. The requeued job lands in the same run directory and resumes from that checkpoint like
any interrupted run (a changed config is refused there, in one line).

Outside a submitit job nothing is installed: SIGUSR2 keeps its default meaning.
"""
from __future__ import annotations

import signal
import sys
from typing import Callable

_received = False
_hand_over: Callable | None = None


class Preempted(BaseException):
    """Raised at the sync point after the stop signal, once the checkpoint is written (a
    BaseException, like KeyboardInterrupt: nothing on the way may swallow it)."""

    def __init__(self, epoch: int, batch: int, step: int):
        super().__init__(f"stopped by the cluster's signal at epoch {epoch + 1}, batch {batch} (step {step}); "
                         f"checkpoint saved")
        self.step, self.epoch = step, epoch


def _note(signum, frame) -> None:
    global _received
    _received = True


def received() -> bool:
    """Whether this process has been told to stop since ``install``."""
    return _received


def install() -> bool:
    """Defer a Python-level SIGUSR2 handler (submitit installs one in its jobs) to the trainer's
    next sync point; True when one was found and deferred."""
    global _hand_over, _received
    previous = signal.getsignal(signal.SIGUSR2)
    if previous is _note:  # already deferred (a second run in the same process)
        return True
    if not callable(previous):
        return False
    _hand_over, _received = previous, False
    signal.signal(signal.SIGUSR2, _note)
    return True


def uninstall() -> None:
    """Give SIGUSR2 back to the handler that had it; a signal received meanwhile is passed on."""
    global _hand_over, _received
    if _hand_over is None or signal.getsignal(signal.SIGUSR2) is not _note:
        return
    signal.signal(signal.SIGUSR2, _hand_over)
    pending, _hand_over, _received = _received, None, False
    if pending:
        signal.raise_signal(signal.SIGUSR2)


def hand_over(is_main: bool) -> None:
    """After the checkpoint: rank 0 lets submitit requeue the job (its handler exits the process);
    the other ranks end here, and the requeued job starts them again."""
    global _received
    handler, _received = _hand_over, False
    uninstall()
    if is_main and handler is not None:
        handler(signal.SIGUSR2, None)
    sys.exit(0)
