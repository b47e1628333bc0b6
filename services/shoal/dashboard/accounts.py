"""`python -m shoal.dashboard.accounts <name> <viewer|operator>`: print a line for the users file.

The password is asked twice on a terminal, or read from the first line of standard input
(`echo "$PASSWORD" | python -m shoal.dashboard.accounts alice operator`). The line holds a
bcrypt hash, never the password: put it in SHOAL_DASHBOARD_USERS_FILE (the chart's
`dashboard.auth.users`, or the Secret named by `dashboard.auth.existingSecret`).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from shoal.dashboard.auth import ROLES, account_line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shoal.dashboard.accounts", description="Print a dashboard account line."
    )
    parser.add_argument("name", help="user name: 1-64 of A-Z a-z 0-9 _ . @ -")
    parser.add_argument("role", choices=ROLES, help="viewer (reads) or operator (reads and acts)")
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        print(account_line(args.name, args.role, password))
    except ValueError as exc:
        print(f"shoal accounts: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
