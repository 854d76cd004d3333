"""Boolean config ids given on the command line.

``python -m monai.bundle run ... --amp false`` hands the config the *string* ``'false'`` (Fire parses only the
Python literals ``True`` / ``False``), and ``bool('false')`` is ``True``: without a parser the lower-case spelling
that reads naturally switches the option on. :func:`as_flag` reads both spellings and refuses anything else.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_flag"]

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


def as_flag(value: Any, name: str) -> bool:
    """``value`` as a bool: ``bool``, ``0`` / ``1`` or a string ``true/false/yes/no/on/off/1/0`` (any case).

    Args:
        value: the config value (a bool from JSON, a string from the command line).
        name: the config id, named in the error.

    Returns:
        the boolean.

    Raises:
        ValueError: on any other value (the message names ``name``).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}.")
