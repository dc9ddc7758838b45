"""Container health checks: `python -m deploy.healthcheck accounts` asks the service over
RPC (a real round trip through the broker, which is what "healthy" means for a service);
`--http URL` checks an HTTP endpoint. Exit 0 when healthy, 1 otherwise."""

from __future__ import annotations

import argparse
import sys
import urllib.request

from shared.config import ConfigError, load_settings
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RpcError

TIMEOUT_SECONDS = 5.0


def check_service(service: str) -> bool:
    settings = load_settings()
    pool = RpcClientPool(settings.amqp_uri, size=1, timeout=TIMEOUT_SECONDS)
    try:
        pool.call(service, "health")
    except RpcError as exc:
        print(f"{service}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    finally:
        pool.close()
    return True


def check_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            return response.status == 200
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("service", nargs="?")
    parser.add_argument("--http")
    args = parser.parse_args(argv)
    try:
        healthy = check_http(args.http) if args.http else check_service(args.service)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
