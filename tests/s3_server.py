"""A real S3-compatible server (moto) on loopback for the storage tests.

In: a pytest MonkeyPatch, a bucket name and the credentials to use. Out (a context manager):
an s3fs filesystem on the server with the bucket made; the endpoint and credentials are in
the environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), the way they reach every
process, Ray workers included. The server stops on exit. s3fs keeps one client per set of
arguments for the life of the process, made with the environment of its time: that cache is
cleared on entry and exit, so no test reuses a client of an earlier test's stopped server.
"""

from __future__ import annotations

import contextlib
import socket


@contextlib.contextmanager
def moto_s3(monkeypatch, bucket: str, access_key: str = "test", secret_key: str = "test"):
    import fsspec
    import s3fs
    from moto import server as moto_server

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        for key, value in {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
                           "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
            monkeypatch.setenv(key, value)
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(bucket)
        yield fs
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
