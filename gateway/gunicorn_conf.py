"""gunicorn settings for the gateway (`gunicorn -c gateway/gunicorn_conf.py ...`).

Threads, not eventlet: gunicorn 26 removed its eventlet worker, and the gateway's RPC
client is plain pika, so eventlet stays out of the gateway entirely.
"""

import os

bind = os.environ.get("JICM_GATEWAY_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("JICM_GATEWAY_WORKERS", "2"))
threads = int(os.environ.get("JICM_GATEWAY_THREADS", "8"))
timeout = 30
graceful_timeout = 10
keepalive = 5
# Bound what one request can make us read before the app's own size limit applies.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# gunicorn 27's control socket lives at one path per user: several gateways on one
# machine (tests, replicas) would fight over it, and nothing here uses it.
control_socket_disable = True
accesslog = "-"
errorlog = "-"
# Read links, check-in links and mailed tokens never reach the access log.
logger_class = "gateway.redact.RedactingLogger"
# No client address: the access log need not hold personal data.
access_log_format = '"%(r)s" %(s)s %(b)s %(L)ss rid=%({x-request-id}o)s'
