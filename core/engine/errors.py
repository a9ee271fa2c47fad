"""Exceptions raised by the engine."""

from __future__ import annotations


class EngineError(Exception):
    """Arrays, shapes or saved bytes given to the engine that it cannot use."""


class DivergenceError(EngineError):
    """Training produced a NaN or infinite loss; ``epoch`` is 1-based."""

    def __init__(self, epoch: int, loss: float, which: str = "loss") -> None:
        self.epoch = epoch
        self.loss = loss
        self.which = which
        super().__init__(
            f"training diverged at epoch {epoch}: {which} is {loss} (try a smaller learning rate)"
        )

    def __reduce__(self) -> tuple[type, tuple[int, float, str]]:
        # Keeps the exception picklable across process boundaries (e.g. Celery results).
        return (type(self), (self.epoch, self.loss, self.which))
