"""Run several tessvrt command lines in one interpreter, each through the CLI's own entry point
(tessvrt.cli.main, what `python -m tessvrt` runs), with its own argv, stdout, stderr and exit code.

Used by tests/conftest.py's run_cli_many: one interpreter start-up (0.5-3 s on the loaded test machine) instead
of one per command. Output is caught at the file descriptors, so what GDAL or any C code writes to 1 or 2 is
in the command's stdout or stderr as it would be in its own process; an exception that escapes main() is
printed as the interpreter would print it (a traceback on that command's stderr, exit code 1).

    python tests/cli_batch.py RESULTS.json < [[ARG, ...], ...]   ->   RESULTS.json: [{"returncode", "stdout", "stderr"}, ...]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback


def run_one(argv: list[str]) -> dict:
    from tessvrt.cli import main

    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.argv = ["tessvrt", *argv]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except BaseException:  # what the interpreter would do with it
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        out.seek(0)
        err.seek(0)
        return {"returncode": code, "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace")}


def main() -> int:
    path = sys.argv[1]  # before run_one sets sys.argv
    results = [run_one(argv) for argv in json.load(sys.stdin)]
    with open(path, "w") as fh:
        json.dump(results, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
