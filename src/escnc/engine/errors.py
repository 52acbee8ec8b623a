"""Engine errors: what the engine refuses or cannot find, in engine terms.

The engine never builds NETCONF rpc-errors; ``operations/`` maps these classes
(``operations/esc_actions.py: engine_rpc_error``):

* :class:`Refused` -- the current state forbids the request (a service being
  started or rebooted, a stopped service): ``operation-failed`` with error-app-tag
  ``operation-not-allowed-in-state``;
* :class:`Conflict` -- another operation holds the object (a resize awaiting
  confirmation): same mapping, the request may succeed later;
* :class:`NotFound` -- the VM or deployment does not exist: ``data-missing``;
* :class:`Invalid` -- the request itself is wrong: ``invalid-value``;
* :class:`Unavailable` -- a VIM host the request needs cannot be read:
  ``operation-failed``.
"""

from __future__ import annotations

from escnc.errors import EscncError


class EngineError(EscncError):
    """Base of the engine's domain errors."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Refused(EngineError):
    """The object's current state does not allow the operation."""


class Conflict(EngineError):
    """Another operation on the object is under way."""


class StateChanged(Conflict):
    """A compare-and-set found the VM in another state than the caller read: someone
    else changed it in between, and the caller's decision no longer holds."""


class NotFound(EngineError):
    """The named VM or deployment does not exist."""


class Invalid(EngineError):
    """The request is not valid whatever the state."""


class Unavailable(EngineError):
    """A VIM host the request needs cannot be reached or read."""
