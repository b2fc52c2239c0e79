"""Resources closed on leaving a ``with`` block: one base instead of a pair of dunders each."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Closing(ABC):
    """A resource that is its own context manager: ``with`` gives the resource itself and
    calls :meth:`close` on leaving, whether or not an exception is on its way."""

    @abstractmethod
    def close(self) -> None:
        """Release what the resource holds; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
