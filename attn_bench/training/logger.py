"""TensorBoard from rank 0 (and nothing from the others): scalars, and the run's HParams row."""
from __future__ import annotations

from pathlib import Path
from typing import Any


class TensorBoardLogger:
    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def __call__(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def hparams(self, hparams: dict[str, Any], results: dict[str, float]) -> None:
        """Write the HParams summaries into this run's own event file.

        ``SummaryWriter.add_hparams`` would open a new sub-run per call; writing the three
        summaries directly keeps one row per run in ``tensorboard --logdir <sweep dir>``.
        """
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        for summary in hparams_summaries(hparams, results):
            self.writer.file_writer.add_summary(summary)
        for tag, value in results.items():
            self.writer.add_scalar(tag, value)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
