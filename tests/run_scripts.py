"""Runs several scripts in this one interpreter, each as ``__main__`` with its own arguments, and writes each one's
exit status, standard output and standard error apart: the benchmarks' smoke runs share one import of torch, fastai
and timm instead of paying it once each.

Usage: python tests/run_scripts.py OUT_DIR JOBS_JSON   (JOBS_JSON: [[script, [arg, ...]], ...]; writes OUT_DIR/I.json)

Each script starts from the interpreter's state as the driver found it: ``sys.argv``, ``sys.path`` (with the
script's folder first, as ``python script.py`` has it), the environment, the working directory and torch's thread
count are put back after it, whether it returned, exited or raised.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import sys
import traceback
from pathlib import Path


def run_one(script: str, args: list[str]) -> dict:
    out, err = io.StringIO(), io.StringIO()
    argv, path, environ, cwd = sys.argv, list(sys.path), dict(os.environ), os.getcwd()
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
                if not isinstance(exit_.code, int | None):
                    print(exit_.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001  (reported as the script's failure, like an interpreter would)
                traceback.print_exc()
                code = 1
    finally:
        sys.argv, sys.path[:] = argv, path
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
        if threads is not None:
            torch.set_num_threads(threads)
    return {"rc": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    import torch  # once, for every script; its thread count is then the one each script starts from

    torch.get_num_threads()
    target, jobs = Path(sys.argv[1]), json.loads(sys.argv[2])
    target.mkdir(parents=True, exist_ok=True)
    for i, (script, args) in enumerate(jobs):
        (target / f"{i}.json").write_text(json.dumps({"script": script, "args": args, **run_one(script, args)}))


if __name__ == "__main__":
    main()
