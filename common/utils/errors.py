"""User-facing errors: the exceptions whose message tells a user which file, key or setting to fix.

MONAI's config parser wraps an exception raised while evaluating a ``$`` expression in a generic
``RuntimeError: Failed to evaluate ConfigExpression``, so a bundle that refuses an input ends in tens of lines
of chained tracebacks whose last line says nothing. :func:`install_excepthook` (installed when ``common`` is
imported) keeps the traceback and adds one final line with the user error found in the chain.
"""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["UserError", "innermost_user_error", "install_excepthook"]


class UserError(Exception):
    """Base of every error that names its culprit (a file, a config key, a folder) and what was expected.

    MONAI's config parser wraps exceptions raised while evaluating a ``$`` expression in a generic
    ``RuntimeError``; errors deriving from this class are recognised in the chain so that the culprit is
    what a user reads last.
    """


def innermost_user_error(exc: BaseException | None) -> UserError | None:
    """The deepest :class:`UserError` in ``exc``'s ``__cause__`` / ``__context__`` chain (``exc`` included).

    The chain is followed the way Python prints it: ``__cause__`` when set, else ``__context__`` unless
    suppressed by ``raise ... from None``. Returns None when the chain holds no ``UserError``.
    """
    found: UserError | None = None
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            found = exc
        if exc.__cause__ is not None:
            exc = exc.__cause__
        elif not exc.__suppress_context__:
            exc = exc.__context__
        else:
            exc = None
    return found


def _user_error_line(error: UserError) -> str:
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def install_excepthook() -> None:
    """Make uncaught exceptions whose chain holds a :class:`UserError` end with that error's line.

    The previous ``sys.excepthook`` still prints the usual traceback; then, when the exception or anything in its
    ``__cause__``/``__context__`` chain is a ``UserError``, one final line ``<ClassName>: <message>`` of the
    innermost one is written to stderr (also when the uncaught exception is itself that error, so the last line
    always has this form); other exceptions are untouched. Calling it again is a no-op.
    """
    if getattr(sys.excepthook, "_common_user_error_hook", False):
        return
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        previous(exc_type, exc, tb)
        try:
            user = innermost_user_error(exc)
            if user is not None:
                sys.stderr.write(_user_error_line(user) + "\n")
                sys.stderr.flush()
        except Exception:  # never let the hook hide the original error
            pass

    hook._common_user_error_hook = True  # type: ignore[attr-defined]
    hook.previous = previous  # type: ignore[attr-defined]
    sys.excepthook = hook
