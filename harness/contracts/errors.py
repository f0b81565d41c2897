"""User-facing errors: the CLI prints them in one line and exits with code 2, no traceback."""

from __future__ import annotations

#: Exit status of a statistical gate whose seeds cannot decide (`compare --fail-if`, harness/report/gate.py):
#: neither a pass (0) nor a decided regression (1) nor bad input (2).
EXIT_INCONCLUSIVE = 3


class WarmbenchError(Exception):
    """Bad input or configuration that the user can fix; the message says how."""


class InputError(WarmbenchError):
    """A problem in an input file, located by file, row and field where known.

    `row` is 1-based and counts data rows (the header is row 0), as a spreadsheet user reads it.
    `key` is the bad key inside the values checked (set by `harness.contracts.options.input_error`,
    also where no file is named), for a caller that knows where those values sit in its own file.
    """

    key: str | None = None

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.row, self.field = file, row, field
        where = ", ".join(
            part for part in (
                f"file {file}" if file else "",
                f"row {row}" if row is not None else "",
                f"field {field!r}" if field else "",
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)
