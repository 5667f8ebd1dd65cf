"""``resilience doctor``."""

from __future__ import annotations

from typing import Any

__all__ = ["add_doctor"]


def add_doctor(sub: Any) -> None:
    pass
