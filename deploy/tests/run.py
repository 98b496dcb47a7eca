#!/usr/bin/env python3
"""Runs every `test_*` function of deploy/tests/test_*.py and prints one line per test and a
closing count. Exit status 0 only when every test passed. A test that cannot run here says
SKIPPED by raising `Skip` (under CI=true the tests that need a tool fail instead)."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import Skip  # noqa: E402


def main(argv: list[str]) -> int:
    wanted = argv[1:]
    passed = failed = skipped = 0
    for path in sorted(HERE.glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(module)
        for name in sorted(n for n in dir(module) if n.startswith("test_")):
            test = getattr(module, name)
            if not callable(test):
                continue
            label = f"{path.stem}::{name}"
            if wanted and not any(w in label for w in wanted):
                continue
            try:
                test()
            except Skip as why:
                skipped += 1
                print(f"SKIPPED {label}: {why}")
            except AssertionError as err:
                failed += 1
                print(f"FAILED  {label}: {err or 'assertion failed'}")
                tb = traceback.extract_tb(err.__traceback__)[-1]
                print(f"        at {Path(tb.filename).name}:{tb.lineno}: {tb.line}")
            except Exception:  # noqa: BLE001 - report any crash as a failure
                failed += 1
                print(f"FAILED  {label}: crashed")
                print("        " + traceback.format_exc().replace("\n", "\n        "))
            else:
                passed += 1
                print(f"ok      {label}")
    print(f"deploy: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
