"""The two ways a transform refuses a message; neither message text ever carries patient data."""

from __future__ import annotations


class MappingError(ValueError):
    """The message cannot be mapped (a permanent failure); names the segment/field, never the value."""


class UnsupportedMessageError(ValueError):
    """The message type/event is not one the mapping layer maps."""
