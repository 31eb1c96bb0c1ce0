"""The one exception type for user mistakes.

A :class:`UserError` is something the user can fix (a missing folder, a wrong CSV column, an
unknown model). Its message is one line that names the thing and the fix; the CLI prints it on
stderr and exits with code 2 (a subclass may name another code, e.g. :class:`TrainingDiverged`,
3). Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input; ``str(err)`` is a one-line message naming the fix."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep it to one line: multi-line messages are folded so the CLI contract holds.
        super().__init__(" ".join(str(message).split()))


class TrainingDiverged(UserError):
    """Training stopped because the loss became NaN or infinite; exit code 3 (see docs/reliability.md)."""

    exit_code = 3
