"""Run several tessvrt command lines in one interpreter, each through the CLI's own entry point
(tessvrt.cli.main, what `python -m tessvrt` runs), with its own argv, stdout, stderr and exit code.

Used by tests/conftest.py's run_cli_many for refusals that fail before any work: one interpreter start-up
(0.5-3 s on the loaded test machine) instead of one per command. An exception that escapes main() is
printed as the interpreter would print it (a traceback on that command's stderr, exit code 1).

    python tests/cli_batch.py < [[ARG, ...], ...]   ->   stdout: [{"returncode", "stdout", "stderr"}, ...]
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def run_one(argv: list[str]) -> dict:
    from tessvrt.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    sys.argv = ["tessvrt", *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except BaseException:  # what the interpreter would do with it
            traceback.print_exc()
            code = 1
    return {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> int:
    real = sys.stdout
    results = [run_one(argv) for argv in json.load(sys.stdin)]
    real.write(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
