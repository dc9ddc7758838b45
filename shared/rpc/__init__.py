"""RPC with deadlines, and one family of errors for it.

- `shared.rpc.client`: `RpcClientPool`, for processes outside nameko (the gateway under
  gunicorn, operator commands, container health checks, benchmarks): nameko's wire format
  over pooled pika connections.
- `shared.rpc.bounded`: `BoundedRpcProxy`, for one service calling another from a worker.
- `shared.rpc.errors`: `RpcError` and its kinds, `RpcTimeout`, `ServiceUnavailable` and
  `RemoteError`, which both raise.
"""

from shared.rpc.errors import RemoteError, RpcError, RpcTimeout, ServiceUnavailable

__all__ = ["RemoteError", "RpcError", "RpcTimeout", "ServiceUnavailable"]
