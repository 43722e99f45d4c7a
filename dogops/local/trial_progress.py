"""Progress of a local training process, read from the lines `model_code/train.py` prints.

The script prints `Progress: features-train 480/6650 images` lines (a few seconds apart) while it
extracts backbone features and one `Epoch: N ...` line per epoch; this turns them into
`dogops.progress.Progress` views: one per feature stage, then one for the epochs.
"""

from __future__ import annotations

from dogops.progress import Progress, SayFn
from model_code.metrics import parse_progress

_EPOCH_PREFIX = "Epoch: "


class TrainingWatcher:
    """Feed it every output line of one training process; `close()` when the process ends."""

    def __init__(self, name: str, epochs: int | None, say: SayFn | None = None) -> None:
        self.name = name
        self.epochs = epochs
        self.say = say
        self.current: Progress | None = None
        self.stage = ""

    def _switch(self, stage: str, total: int | None, unit: str) -> Progress:
        if self.current is not None and self.stage != stage:
            self.current.finish()
            self.current = None
        if self.current is None:
            self.stage = stage
            self.current = Progress(f"{self.name} {stage}", total, unit, say=self.say)
        return self.current

    def feed(self, line: str) -> None:
        found = parse_progress(line)
        if found is not None:
            stage, done, total, unit = found
            self._switch(stage, total, unit).update(done)
            return
        if line.startswith(_EPOCH_PREFIX):
            try:
                epoch = int(line[len(_EPOCH_PREFIX):].split()[0])
            except (IndexError, ValueError):
                return
            self._switch("epochs", self.epochs, "epochs").update(epoch, note=line.strip())

    def close(self) -> None:
        if self.current is not None:
            self.current.finish()
            self.current = None
