"""The `dyno` client's entry point (the client itself arrives with the platform issue)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "dyno: the client needs `dynod serve`, which is not built yet; "
        "use `dynod start` to run an app locally",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
