"""Rich progress bar for training epochs: loss, accuracy, lr and img/s live."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class EpochProgress:
    def __init__(self, epochs: int, console: Console | None = None):
        self.epochs = epochs
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.1%}  lr {task.fields[lr]:.2e}"
                       "  {task.fields[img_s]:.0f} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )

    def __enter__(self) -> "EpochProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start_epoch(self, epoch: int, total: int, completed: int = 0):
        return self.progress.add_task("train", total=total, completed=completed, epoch=epoch, epochs=self.epochs,
                                      loss=float("nan"), acc=0.0, lr=0.0, img_s=0.0)

    def update(self, task, advance: int = 1, **fields) -> None:
        self.progress.update(task, advance=advance, **fields)

    def finish(self, task) -> None:
        self.progress.remove_task(task)  # the epoch's log line keeps the history; bars would pile up
