"""The bucket a storage benchmark runs against: `--endpoint URL --bucket NAME`, or by default moto's
S3 server on 127.0.0.1 (needs the `test` extra)."""

from __future__ import annotations

import argparse
import logging
import os
import socket


def start(bucket: str):
    """(server, endpoint) with `bucket` created; fake credentials in the environment if none are set."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return server, endpoint


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--endpoint", help="an S3-compatible server (credentials from the AWS chain); default: moto on loopback")
    p.add_argument("--bucket", default="ganflow-bench")


def open_endpoint(args: argparse.Namespace):
    """Sets args.endpoint, starting the loopback server when none was given; returns it (or None) to stop."""
    if args.endpoint is not None:
        return None
    server, args.endpoint = start(args.bucket)
    return server
