"""`python tests/support/modules_probe.py run --config ...`: the real `edged run`, plus a probe.

A test-only wrapper around the CLI: a thread answers each line written to stdin with the sorted
names in this process's `sys.modules`, as one JSON line on stdout. It lets a test look inside a
RUNNING supervisor (workers up, detections flowing) for modules it must never load. The probe is
a daemon thread that only reads `sys.modules`; it changes nothing the supervisor does.

`loaded_after` asks the same of a fresh interpreter that only imports some modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading


def loaded_after(*imports: str) -> list[str]:
    """Every module name in a fresh interpreter's `sys.modules` once it has imported `imports`."""
    code = f"import sys, json; import {', '.join(imports)}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def _answer() -> None:
    for _ in sys.stdin:
        sys.stdout.write(json.dumps(sorted(sys.modules)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":  # spawn re-imports this file in each worker as __mp_main__
    from edged.cli import main

    threading.Thread(target=_answer, name="modules-probe", daemon=True).start()
    sys.exit(main(sys.argv[1:]))
