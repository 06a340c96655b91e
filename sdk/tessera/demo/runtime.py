"""The operator's local runtime as a demo child: ``python -m tessera.demo.runtime ARGS``.

The same as ``python -m tessera.operator.local`` (same arguments), but it first
arranges to be killed when the demo dies, so its zone processes (which die
with it) never outlive the demo even if the demo is killed with SIGKILL.
"""

from __future__ import annotations

from tessera.common.process import die_with_parent
from tessera.operator import local


def main() -> None:
    die_with_parent()
    local.main()


if __name__ == "__main__":
    main()
