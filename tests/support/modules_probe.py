"""`python tests/support/modules_probe.py run --config ...`: the real `edged run`, plus a probe.

A test-only wrapper around the CLI: a thread answers each line written to stdin with the sorted
names in this process's `sys.modules`, as one JSON line on stdout. It lets a test look inside a
RUNNING supervisor (workers up, detections flowing) for modules it must never load. The probe is
a daemon thread that only reads `sys.modules`; it changes nothing the supervisor does.
"""

from __future__ import annotations

import json
import sys
import threading


def _answer() -> None:
    for _ in sys.stdin:
        sys.stdout.write(json.dumps(sorted(sys.modules)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":  # spawn re-imports this file in each worker as __mp_main__
    from edged.cli import main

    threading.Thread(target=_answer, name="modules-probe", daemon=True).start()
    sys.exit(main(sys.argv[1:]))
