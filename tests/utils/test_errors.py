from __future__ import annotations

import subprocess
import sys
import textwrap

from common.utils.errors import UserError, innermost_user_error, install_excepthook

WRAPPED = """
    import common
    from common.data.validation import InputDataError
    def evaluate():
        try:
            raise InputDataError("input file '/d/t1.nii.gz' cannot be read")
        except InputDataError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression") from e
    try:
        evaluate()
    except RuntimeError as e:
        raise RuntimeError("component failed") from e
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def _last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_wrapped_user_error_is_the_last_line():
    proc = _run(WRAPPED)
    assert proc.returncode != 0
    assert _last_line(proc.stderr) == "InputDataError: input file '/d/t1.nii.gz' cannot be read"
    assert "Traceback (most recent call last)" in proc.stderr  # the usual traceback is still printed
    assert "RuntimeError: component failed" in proc.stderr


def test_plain_error_unchanged():
    proc = _run("import common\nraise ValueError('plain problem')")
    assert proc.returncode != 0
    assert _last_line(proc.stderr) == "ValueError: plain problem"
    assert proc.stderr.count("plain problem") == 1


def test_context_chain_and_innermost():
    proc = _run("""
        import common
        from common.utils.errors import UserError
        class Outer(UserError): pass
        class Inner(UserError): pass
        try:
            try:
                raise Inner("the\\nculprit")
            except Inner:
                raise Outer("wrapper")
        except Outer:
            raise KeyError("k")
    """)
    assert proc.returncode != 0
    assert _last_line(proc.stderr) == "Inner: the culprit"


def test_idempotent_and_chains_previous():
    proc = _run("""
        import sys
        def mine(t, e, tb):
            sys.stderr.write("previous hook ran\\n")
        sys.excepthook = mine
        import common
        from common.utils.errors import install_excepthook, UserError
        install_excepthook(); install_excepthook()
        raise RuntimeError("x") from UserError("fix me")
    """)
    lines = proc.stderr.strip().splitlines()
    assert lines == ["previous hook ran", "UserError: fix me"]


def test_innermost_user_error_in_process():
    class CulpritError(UserError):
        pass

    inner = CulpritError("bad file")
    try:
        try:
            raise inner
        except CulpritError as e:
            raise RuntimeError("wrap") from e
    except RuntimeError as outer:
        assert innermost_user_error(outer) is inner
    assert innermost_user_error(ValueError("x")) is None
    suppressed = RuntimeError("y")
    suppressed.__context__ = inner
    suppressed.__suppress_context__ = True
    assert innermost_user_error(suppressed) is None
    install_excepthook()
    assert getattr(sys.excepthook, "_common_user_error_hook", False)


def test_input_data_error_is_a_user_error_and_a_value_error():
    from common.data.validation import InputDataError

    err = InputDataError("m")
    assert isinstance(err, UserError) and isinstance(err, ValueError)
