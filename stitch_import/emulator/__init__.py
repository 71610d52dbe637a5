"""A local, faithful Stitch Import API for tests: :class:`Emulator`.

It serves the Import API (``/v2/import/{status,batch,push,validate}``) and the Connect API's
token endpoints over real HTTP on loopback, keeps what it accepts as tables, and injects faults.
The pytest fixture ``stitch_emulator`` gives a started one; ``stitch-import emulator`` runs one
in the foreground. See the "Emulator and testing" page for a guide.
"""

from __future__ import annotations

from .core import Emulator
from .state import AcceptedRequest, LoggedRequest

__all__ = ["AcceptedRequest", "Emulator", "LoggedRequest"]
