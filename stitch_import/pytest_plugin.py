"""The ``stitch_emulator`` pytest fixture, registered through the ``pytest11`` entry point.

Any project that installs stitch-import can use it in its own tests::

    def test_pipeline(stitch_emulator):
        run_pipeline(url=stitch_emulator.base_url, token=stitch_emulator.token)
        assert stitch_emulator.rows("customers") == [...]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .emulator import Emulator


@pytest.fixture
def stitch_emulator() -> Iterator[Emulator]:
    """A started :class:`~stitch_import.emulator.Emulator` (client id 7723), stopped after."""
    from .emulator import Emulator

    with Emulator() as emulator:
        yield emulator
