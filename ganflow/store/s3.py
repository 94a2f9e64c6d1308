"""A store rooted at `s3://bucket/prefix` on AWS S3 or an S3-compatible server (MinIO, Ceph RGW,
R2): boto3 with botocore's retries for our own reads and writes, pyarrow's S3 filesystem (retrying
alike) for Ray Train's storage and Ray Data."""

from __future__ import annotations

import functools
import logging
import os
import shutil
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

from ganflow.store.atomic import replace_atomically
from ganflow.store.base import NotFound, S3Options, StorageError, Store, join, split_s3
from ganflow.store.names import contained

log = logging.getLogger("ganflow.storage")

MULTIPART_THRESHOLD = 16 * 1024 * 1024  # bytes; larger objects go up and down in parallel parts
MULTIPART_CHUNK = 16 * 1024 * 1024


def _retry_logger(max_attempts: int):
    """A botocore `needs-retry` listener that says what failed; botocore decides on the retry."""

    def log_failed_attempt(attempts: int, operation, caught_exception=None, response=None, **_) -> None:
        status = response[0].status_code if response and response[0] is not None else None
        if caught_exception is None and (status is None or status < 500) and status != 429:
            return
        what = type(caught_exception).__name__ if caught_exception is not None else f"HTTP {status}"
        then = "retrying" if attempts < max_attempts else "giving up"
        log.warning("ganflow storage: %s attempt %d/%d failed (%s); %s", operation.name, attempts, max_attempts, what, then)

    return log_failed_attempt


class S3Store(Store):
    """An S3-compatible bucket through boto3: multipart transfers, botocore retries."""

    def __init__(self, uri: str, options: S3Options = S3Options()):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix = split_s3(uri)
        self.root = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.options = options
        config = Config(
            region_name=options.region,
            retries={"mode": options.retry_mode, "total_max_attempts": options.max_attempts},
            connect_timeout=5,
            read_timeout=60,
            # S3-compatible servers (MinIO, Ceph, moto) are addressed by path; AWS picks for itself
            s3={"addressing_style": "path" if options.endpoint_url else "auto"},
        )
        self.client = boto3.session.Session().client("s3", endpoint_url=options.endpoint_url, config=config)
        self.client.meta.events.register("needs-retry.s3", _retry_logger(options.max_attempts))
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNK)

    def _k(self, key: str) -> str:
        return join(self.prefix, key)

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._k(key)}".rstrip("/")

    def _explain(self, err: Exception, key: str = "", bucket_level: bool = False) -> StorageError:
        return explain_s3_error(err, self.bucket, self.uri(key), self.client.meta.endpoint_url, bucket_level)

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)
        except Exception as err:
            raise self._explain(err, key) from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
        except Exception as err:
            raise self._explain(err, key) from None

    def get_versioned(self, key: str) -> Tuple[Optional[bytes], Optional[str]]:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
            return got["Body"].read(), got["ETag"]
        except Exception as err:
            e = self._explain(err, key)
            if isinstance(e, NotFound):
                return None, None
            raise e from None

    def put_if(self, key: str, data: bytes, version: Optional[str]) -> Optional[str]:
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, **condition)["ETag"]
        except Exception as err:
            response = getattr(err, "response", None) or {}
            code = response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"):
                return None  # changed (or gone) since `version` was read
            raise self._explain(err, key) from None

    def put_file(self, key: str, path: Path) -> None:
        try:
            self.client.upload_file(str(path), self.bucket, self._k(key), Config=self.transfer)
        except Exception as err:
            raise self._explain(getattr(err, "last_exception", None) or err, key) from None

    def get_file(self, key: str, path: Path) -> None:
        try:
            replace_atomically(path, lambda tmp: self.client.download_file(self.bucket, self._k(key), str(tmp), Config=self.transfer))
        except Exception as err:
            raise self._explain(err, key) from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._k(key))
            return True
        except Exception as err:
            e = self._explain(err, key)
            if isinstance(e, NotFound):
                return False
            raise e from None

    def _pages(self, prefix: str, **kwargs):
        full = join(self.prefix, prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            yield from paginator.paginate(Bucket=self.bucket, Prefix=full + "/" if full else "", **kwargs)
        except Exception as err:
            raise self._explain(err, prefix) from None

    def list(self, prefix: str = "") -> List[str]:
        base = len(self.prefix) + 1 if self.prefix else 0
        return sorted(obj["Key"][base:] for page in self._pages(prefix) for obj in page.get("Contents", [])
                      if not obj["Key"].endswith("/"))  # folder markers some tools (pyarrow) create

    def list_dirs(self, prefix: str = "") -> List[str]:
        names = []
        for page in self._pages(prefix, Delimiter="/"):
            names += [p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in page.get("CommonPrefixes", [])]
        return sorted(names)

    def delete_prefix(self, prefix: str) -> None:
        keys = [self._k(k) for k in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            try:
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                                                  "Quiet": True})
            except Exception as err:
                raise self._explain(err, prefix) from None
            # A bulk delete answers 200 and lists the keys it refused (AccessDenied, ...) in its body.
            refused = answer.get("Errors") or []
            if refused:
                first = refused[0]
                raise StorageError(f"storage: {len(refused)} object(s) under {self.uri(prefix)} were not deleted "
                                   f"({first.get('Code')} on {first.get('Key')}); check the bucket policy allows s3:DeleteObject")

    def append_bytes(self, key: str, data: bytes) -> None:
        try:
            old = self.get_bytes(key)
        except NotFound:
            old = b""
        self.put_bytes(key, old + data)

    def publish_dir(self, local_dir: Path, key: str, last: str) -> str:
        names = sorted(p.name for p in Path(local_dir).iterdir() if p.is_file() and p.name != last)
        for name in names + [last]:
            self.put_file(join(key, name), Path(local_dir) / name)
        return self.uri(key)

    def fetch_dir(self, key: str, names: Sequence[str], cache_dir: Path) -> Path:
        names = [contained(name, f"{self.uri(key)}: file name") for name in names]  # a manifest's: data from the bucket
        target = Path(cache_dir) / (key.replace("/", "_") or "root")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in names:
            self.get_file(join(key, name), target / name)
        return target

    def ray_path(self, key: str = "") -> Tuple[str, Any]:
        return f"{self.bucket}/{self._k(key)}".rstrip("/"), pyarrow_s3(self.options)

    def uri_from_ray_path(self, path: str) -> str:
        return path if path.startswith("s3://") else f"s3://{path}"

    def check_reachable(self) -> None:
        self.check()

    def check(self) -> None:
        """One quick look at the bucket (3 attempts, no retry log): a wrong endpoint, bucket or
        credential is reported in seconds, not after the full retry budget."""
        import boto3
        from botocore.config import Config

        quick = boto3.session.Session().client(
            "s3", endpoint_url=self.options.endpoint_url,
            config=self.client.meta.config.merge(Config(retries={"mode": self.options.retry_mode, "total_max_attempts": 3})))
        try:
            quick.head_bucket(Bucket=self.bucket)
        except Exception as err:
            raise self._explain(err, bucket_level=True) from None


def explain_s3_error(err: Exception, bucket: str, uri: str, endpoint: Optional[str], bucket_level: bool = False) -> StorageError:
    """One line a user can act on, for the botocore failures people actually hit."""
    from botocore import exceptions as bx

    where = endpoint or "AWS S3"
    if isinstance(err, bx.NoCredentialsError):
        return StorageError("storage: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                            "or AWS_PROFILE, or run with an instance/pod role")
    if isinstance(err, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError)):
        return StorageError(f"storage.endpoint_url: cannot reach {where} ({type(err).__name__}); "
                            "check the URL and that the server is up")
    if isinstance(err, bx.ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket" or (code in ("404", "NotFound") and bucket_level):
            return StorageError(f"storage.uri: bucket {bucket!r} does not exist at {where}; create it or fix the URI")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"no such object {uri}")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "AccessDenied", "ExpiredToken"):
            return StorageError(f"storage: access to {uri} denied ({code}); check the AWS credentials and the bucket policy")
        return StorageError(f"storage: {uri}: {code or status} from {where}")
    if isinstance(err, StorageError):
        return err
    return StorageError(f"storage: {uri}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


def s3_endpoint(options: S3Options) -> Optional[str]:
    """The endpoint boto3 will use: the config's, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL."""
    return options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def pyarrow_s3(options: S3Options):
    """pyarrow's S3FileSystem on the same endpoint, for Ray Train's storage and Ray Data, retrying
    like our boto3 client. Credentials come from the AWS chain inside pyarrow; none are passed
    (or pickled with it)."""
    kwargs: dict = {}
    endpoint = s3_endpoint(options)
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
    region = options.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return _retrying_s3_class()(options.max_attempts, kwargs)


@functools.lru_cache(maxsize=None)
def _retrying_s3_class():
    """pyarrow's S3FileSystem drops its retry strategy when pickled, and Ray pickles the storage
    filesystem to its controller, which then failed its first write in an outage. This subclass
    pickles the strategy along (by attempts), so every Ray process retries alike."""
    from pyarrow import fs

    class RetryingS3FileSystem(fs.S3FileSystem):
        def __init__(self, max_attempts: int, kwargs: dict):
            super().__init__(retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=max_attempts), **kwargs)
            self._args = (max_attempts, kwargs)

        def __reduce__(self):
            return _make_retrying_s3, self._args

    return RetryingS3FileSystem


def _make_retrying_s3(max_attempts: int, kwargs: dict):
    return _retrying_s3_class()(max_attempts, kwargs)
