"""The object store seam (`ObjectStore`) and its one implementation, S3 through
aiobotocore (`S3Objects`), opened once per process by `open_s3`.

aiobotocore is in the `cluster` extra: it is imported only when a bucket is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from storyroom.config import Settings

PART_BYTES: Final = 8 * 1024 * 1024
"""Finalized files above this go up in parts of this size (bounded memory)."""
CONNECT_TIMEOUT_S: Final = 5.0
READ_TIMEOUT_S: Final = 30.0


class StorageError(RuntimeError):
    """The object store refused or could not be reached; the message says which."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int


class ObjectStore(Protocol):
    """What storyroom asks of an object store. Every method runs on the loop and never
    blocks it (file reads go to a thread)."""

    async def put_new(self, key: str, data: bytes) -> bool:
        """Create `key` unless it exists (conditional create: a second writer cannot
        overwrite). True when created, False when it was already there."""

    async def put_file(self, key: str, path: Path) -> None:
        """Upload a local file under `key` (replacing it), in parts for large files."""

    async def get(self, key: str) -> bytes: ...

    async def size(self, key: str) -> int | None:
        """The object's size, or None when there is no such object."""

    def list(self, prefix: str) -> AsyncIterator[StoredObject]:
        """Every object whose key starts with `prefix`, in key order."""

    async def presigned_get(
        self, key: str, expires_s: int, *, filename: str, content_type: str
    ) -> str:
        """A URL that GETs `key` (Range works) without credentials for `expires_s`."""


class S3Objects:
    """`ObjectStore` on an S3-compatible bucket (path-style addressing, SigV4)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    async def check(self) -> None:
        """The bucket exists and these credentials can reach it, or `StorageError`."""
        await self._call("reach the bucket", self.client.head_bucket, Bucket=self.bucket)

    async def put_new(self, key: str, data: bytes) -> bool:
        try:
            await self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
        except Exception as exc:
            if _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise StorageError(f"could not create {key}: {_describe(exc)}") from exc
        return True

    async def put_file(self, key: str, path: Path) -> None:
        size = (await asyncio.to_thread(path.stat)).st_size
        if size <= PART_BYTES:
            data = await asyncio.to_thread(path.read_bytes)
            await self._call(
                f"upload {key}", self.client.put_object, Bucket=self.bucket, Key=key, Body=data
            )
            return
        started = await self._call(
            f"upload {key}", self.client.create_multipart_upload, Bucket=self.bucket, Key=key
        )
        upload_id = started["UploadId"]
        parts = []
        try:
            with open(path, "rb") as f:  # noqa: ASYNC230 - reads go to a thread below
                number = 1
                while chunk := await asyncio.to_thread(f.read, PART_BYTES):
                    part = await self._call(
                        f"upload {key}",
                        self.client.upload_part,
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                    parts.append({"ETag": part["ETag"], "PartNumber": number})
                    number += 1
            await self._call(
                f"upload {key}",
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(Exception):  # the upload failed already; say that
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                )
            raise

    async def delete(self, key: str) -> None:
        """Remove `key` (only `storyroom check`'s probe: recordings are never deleted
        from here)."""
        await self._call(f"delete {key}", self.client.delete_object, Bucket=self.bucket, Key=key)

    async def get(self, key: str) -> bytes:
        response = await self._call(
            f"read {key}", self.client.get_object, Bucket=self.bucket, Key=key
        )
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def size(self, key: str) -> int | None:
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"could not look up {key}: {_describe(exc)}") from exc
        return int(head["ContentLength"])

    async def list(self, prefix: str) -> AsyncIterator[StoredObject]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    yield StoredObject(item["Key"], int(item["Size"]))
        except Exception as exc:
            raise StorageError(f"could not list {prefix}: {_describe(exc)}") from exc

    async def presigned_get(
        self, key: str, expires_s: int, *, filename: str, content_type: str
    ) -> str:
        url: str = await self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
                "ResponseContentType": content_type,
                "ResponseCacheControl": "private, no-cache",
            },
            ExpiresIn=expires_s,
        )
        return url

    async def _call(self, what: str, method: Callable[..., Any], **params: Any) -> Any:
        try:
            return await method(**params)
        except Exception as exc:
            raise StorageError(f"could not {what}: {_describe(exc)}") from exc


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    error = response.get("Error", {})
    return str(error.get("Code", ""))


def _describe(exc: Exception) -> str:
    code = _error_code(exc)
    return f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"


@contextlib.asynccontextmanager
async def open_s3(settings: Settings) -> AsyncIterator[S3Objects]:
    """The bucket named in the settings, checked (`StorageError` when it cannot be
    reached); closed on exit. Owner: the app's cleanup context (or a CLI command)."""
    try:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session
    except ImportError:
        raise StorageError(
            "shared storage needs aiobotocore: install storyroom with its cluster extra"
        ) from None

    config = AioConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": 2, "mode": "standard"},
        # our own calls, built from typed values: botocore's check of every request's
        # parameters is CPU per object for nothing
        parameter_validation=False,
        # the checksums S3 asks for only: the shipper's bytes are re-read from disk
        # after a failure anyway, and a checksum per 2-second object is CPU for nothing
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client_context = get_session().create_client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key or None,
        aws_secret_access_key=settings.s3_secret_key or None,
        config=config,
    )
    async with client_context as client:
        objects = S3Objects(client, settings.s3_bucket)
        try:
            await objects.check()
        except StorageError as exc:
            raise StorageError(
                f"shared storage: bucket {settings.s3_bucket!r} at "
                f"{settings.s3_endpoint or 'AWS S3'}: {exc}"
            ) from None
        yield objects
