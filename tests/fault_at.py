"""Run the attn-bench CLI with one fault injected at a named point of a run, deterministically.

``python fault_at.py POINT [overrides ...]``. Most points SIGKILL the process (exit -9) right there:

- ``mid_epoch``: just after the first mid-epoch ``last.pt`` of epoch 2 is written;
- ``epoch_end``: just after epoch 1's end-of-epoch checkpoint reached ``last.pt``;
- ``before_last``: after epoch 1's ``best.pt`` was written, before it was copied to ``last.pt``;
- ``eval``: in the middle of epoch 2's evaluation (after its first eval batch);
- ``before_metrics``: after the final ``last.pt``, before ``metrics.json`` is written.

Under torchrun only rank 0 kills itself (torchrun then stops the other ranks).

``nan_on_rank1``: under torchrun, rank 1's loss at step 5 reads as NaN (rank 0's stays finite).
"""
from __future__ import annotations

import os
import signal
import sys

from attn_bench import rundir
from attn_bench.rundir import LAST_CKPT
from attn_bench.training import trainer as trainer_module
from attn_bench.training.trainer import Trainer


def _die() -> None:
    if os.environ.get("RANK", "0") == "0":
        sys.stdout.flush(), sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _patch(point: str) -> None:
    if point == "mid_epoch":
        save = Trainer._save

        def _save(self, state, raw_model, name):
            save(self, state, raw_model, name)
            if name == LAST_CKPT and state.epoch >= 1 and state.batch > 0:
                _die()

        Trainer._save = _save
    elif point in ("epoch_end", "before_last"):
        copy = trainer_module.copy_checkpoint

        def copy_checkpoint(src, dst):
            if point == "before_last":
                _die()
            copy(src, dst)
            _die()

        trainer_module.copy_checkpoint = copy_checkpoint  # epoch 1 is always the best so far
    elif point == "eval":
        evaluate, calls = Trainer.evaluate, []

        def evaluate_then_die(self):
            calls.append(1)
            if len(calls) == 2:
                self.model.register_forward_hook(lambda *_: _die())
            return evaluate(self)

        Trainer.evaluate = evaluate_then_die
    elif point == "before_metrics":
        write = rundir.RunRecord.write

        def write_or_die(self, run_dir):
            if self.completed:
                _die()
            return write(self, run_dir)

        rundir.RunRecord.write = write_or_die
    elif point == "nan_on_rank1":
        watch = Trainer._watch_divergence

        def watch_poisoned(self, loss):
            if os.environ.get("RANK") == "1" and int(self._step_counter) == 5:  # step 5 (its update's number)
                loss = loss * float("nan")
            watch(self, loss)

        Trainer._watch_divergence = watch_poisoned
    else:
        raise SystemExit(f"unknown fault point {point!r}")


if __name__ == "__main__":
    _patch(sys.argv[1])
    from attn_bench.cli import main

    sys.exit(main(sys.argv[2:]))
