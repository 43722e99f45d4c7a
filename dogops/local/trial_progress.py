"""Progress of a local training process, read from the lines `model_code/train.py` prints.

The script prints `Progress: features-train 480/6650 images` lines (a few seconds apart) while it
extracts backbone features and one `Epoch: N ...` line per epoch; this turns them into
`dogops.progress.Progress` views: one per feature stage, then one for the epochs. Its own
`[train] ...` lines (device, data size, cache hit or miss, selected epoch) are passed on as they
come, so the start of a trial (importing torch, loading the backbone: 10-30 s on a busy machine)
is not a silence in the run's log either.
"""

from __future__ import annotations

from dogops.progress import Progress, SayFn, default_say
from model_code.metrics import parse_progress

_EPOCH_PREFIX = "Epoch: "
_SCRIPT_PREFIX = "[train] "


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
        if line.startswith(_SCRIPT_PREFIX):
            (self.say or default_say())(f"{self.name}: {line[len(_SCRIPT_PREFIX):].strip()}")
            return
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

    def close(self, succeeded: bool = True) -> None:
        """The process ended; a failed one leaves its stage's artifact at the share it reached."""
        if self.current is not None:
            self.current.finish(completed=succeeded)
            self.current = None
