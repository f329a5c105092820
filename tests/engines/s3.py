"""An S3 API for tests: moto in server mode, on a free local port, reached over real HTTP.

LanceDB (its Rust object store) and the index's sidecar (pyarrow's S3 filesystem) talk to it as
they would to AWS or an S3-compatible store: through `AWS_ENDPOINT_URL` and the standard AWS
credentials variables, which `environ()` gives a test or a replica process.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.engines.postgres import EngineUnavailable, free_port

REGION = "us-east-1"


@dataclass
class S3Server:
    server: Any  # moto.server.ThreadedMotoServer
    endpoint: str

    def environ(self) -> dict[str, str]:
        """The standard AWS variables a client of this store needs (moto accepts any key)."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def create_bucket(self) -> str:
        """A fresh, empty bucket; returns its name."""
        import boto3

        name = f"kb-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=name)
        return name

    def upload(self, folder: Path, uri: str) -> None:
        """Copy a local index directory (table and sidecar files) under an s3:// URI."""
        from pyarrow import fs

        s3 = fs.S3FileSystem(
            access_key="testing",
            secret_key="testing",
            region=REGION,
            endpoint_override=self.endpoint.removeprefix("http://"),
            scheme="http",
        )
        fs.copy_files(str(folder), uri.removeprefix("s3://"), destination_filesystem=s3)

    def stop(self) -> None:
        self.server.stop()


def start_s3() -> S3Server:
    """moto's threaded server on a free port; raises EngineUnavailable when it cannot start."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise EngineUnavailable(f"moto[server] is not installed: {exc}") from exc
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 (a port taken meanwhile, a missing werkzeug: say why)
        raise EngineUnavailable(f"moto server did not start: {exc}") from exc
    s3 = S3Server(server, f"http://127.0.0.1:{port}")
    try:
        s3.create_bucket()
    except Exception as exc:  # noqa: BLE001
        server.stop()
        raise EngineUnavailable(f"moto server does not answer S3 calls: {exc}") from exc
    return s3
