"""`python -m shoal.scheduler [--host H] [--port P]`: the scheduler API, served with its protections."""

from __future__ import annotations

import argparse

from shoal.scheduler.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shoal.scheduler", description=__doc__)
    parser.add_argument("--host", help="address to listen on (SHOAL_HTTP_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (SHOAL_HTTP_PORT, default 8000)")
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    args = parser.parse_args(argv)
    serve(args.host, args.port, access_log=not args.no_access_log)


if __name__ == "__main__":
    main()
