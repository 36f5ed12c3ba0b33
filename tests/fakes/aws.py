"""A real AWS-speaking HTTP server (moto in server mode: S3, SSM, ...) on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

ACCESS_KEY = "qsf-test"
REGION = "us-east-1"


@contextmanager
def aws_server(secret: str) -> Iterator[dict[str, str]]:
    """Run the server for the ``with`` block; yields the AWS environment that reaches it
    (``secret`` as the secret access key, never the instance metadata service)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
               "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}
    finally:
        server.stop()
