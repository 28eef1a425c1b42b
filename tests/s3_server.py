"""A real S3-compatible server for the tests: moto's standalone server (``moto[server]``).

:func:`s3_server` starts ``moto_server`` on ``host`` with authentication on: the first few requests
(``INITIAL_NO_AUTH_ACTION_COUNT``) create an IAM user with an access key allowed ``s3:*`` and the
bucket; every later request needs that key, so wrong credentials are refused as on AWS. The server
is stopped by its pid. Clients are configured the standard way, by environment:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``.
"""
from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from procs import stop

SETUP_ACTIONS = 4  # create_user, put_user_policy, create_access_key, create_bucket
REGION = "us-east-1"


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str

    def filesystem(self):
        """Returns a pyarrow ``S3FileSystem`` on this server (paths: ``<bucket>/<key>``)."""
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(endpoint_override=self.endpoint, access_key=self.access_key,
                                 secret_key=self.secret_key, region=REGION)

    @property
    def env(self) -> dict[str, str]:
        """The environment that points S3 clients (pyarrow, boto3) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": REGION,
                "AWS_EC2_METADATA_DISABLED": "true"}


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server(host: str = "127.0.0.1", bucket: str = "studies") -> Iterator[S3]:
    """Starts moto's S3 server on ``host``; yields its endpoint, bucket and credentials."""
    import boto3

    port = _free_port(host)
    endpoint = f"http://{host}:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", host, "-p", str(port)],
        env={"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection((host, port), timeout=1).close()
                break
            assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)
        setup = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "setup",
                 "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="studies")
        iam.put_user_policy(UserName="studies", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="studies")["AccessKey"]
        s3 = S3(endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"])
        boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                     aws_access_key_id=s3.access_key,
                     aws_secret_access_key=s3.secret_key).create_bucket(Bucket=bucket)
        yield s3
    finally:
        stop(server)
