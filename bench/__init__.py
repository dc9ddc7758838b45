"""Benchmarks of Just in Case: they measure and record, they never assert.

Performance is measured here, not asserted by timed tests: a timing threshold in a test
fails on a busy CI machine and passes on a fast laptop, and says little either way. A
benchmark instead writes its figures to `bench/results/<name>.json` (gitignored), with
the facts of the machine it ran on, so runs can be compared side by side.

    python -m bench                      # every benchmark, full size (make bench)
    python -m bench --quick              # shrunken sizes: a smoke run of the harness
    python -m bench --only storage rpc   # a subset

Benchmarks:

- `storage`: the embedded SQLite adapter and the pymongo adapter on mongomock, in process;
- `rpc`: gateway-style RPC round trips to the accounts service over RabbitMQ;
- `http`: sign-up, log-in and `GET /api/v1/me` through the gunicorn gateway;
- `checkin`: authenticated check-ins through the gateway, beside the bare pooled RPC and a
  no-op Flask route under the same gunicorn settings, at 1, 16 and 64 connections (wrk);
- `footprint`: each process's memory and CPU, idle, under a sender's day of requests and
  under check-ins.

The bench process never monkey-patches eventlet: it drives everything from plain threads,
as the gateway does, and the services run as separate processes exactly as `make run`
starts them.
"""
