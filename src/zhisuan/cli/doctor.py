"""``zhisuan doctor``. (Being written.)"""

from __future__ import annotations


def doctor() -> None:
    """Check every part of the software stack."""
