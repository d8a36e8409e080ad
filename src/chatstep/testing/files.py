"""The Files API of the test server: upload, list, retrieve, download and delete, in memory."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from chatstep.testing.wire import Outcome, Request, error_outcome

__all__ = ["FileStore", "StoredFile", "parse_multipart"]

JSON = dict[str, Any]


@dataclass
class StoredFile:
    """An uploaded (or batch-produced) file."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def as_object(self) -> JSON:
        """The ``file`` object the API returns."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


def parse_multipart(content_type: str, raw: bytes) -> tuple[JSON, dict[str, tuple[str, bytes]]]:
    """(text fields, file fields as name -> (filename, content)) of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(EmailMessage, policy=HTTP).parsebytes(head + raw)
    fields: JSON = {}
    uploads: dict[str, tuple[str, bytes]] = {}
    if not message.is_multipart():
        return fields, uploads
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        decoded = part.get_payload(decode=True)
        payload = decoded if isinstance(decoded, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            uploads[name] = (filename, payload)
        else:
            fields[name] = payload.decode("utf-8", "replace")
    return fields, uploads


class FileStore:
    """Files kept in memory, by id."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._lock = threading.Lock()

    def add(self, file_id: str, filename: str, purpose: str, content: bytes) -> StoredFile:
        """Store a file under ``file_id``."""
        stored = StoredFile(file_id, filename, purpose, content, int(time.time()))
        with self._lock:
            self._files[file_id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        """The file with that id, or None."""
        with self._lock:
            return self._files.get(file_id)

    def clear(self) -> None:
        """Forget every file."""
        with self._lock:
            self._files.clear()

    def answer(self, request: Request, new_id: str) -> Outcome | JSON:
        """Answer a Files API request (``new_id`` names an upload)."""
        route = request.route
        file_id = request.path_params.get("file_id", "")
        if route == "/v1/files" and request.method == "POST":
            return self._upload(request, new_id)
        if route == "/v1/files":
            return self._list(request)
        stored = self.get(file_id)
        if stored is None:
            return error_outcome(404, f"No such File object: {file_id}", param="file_id")
        if route == "/v1/files/{file_id}/content":
            return Outcome(raw=stored.content, headers={"content-type": "application/octet-stream"})
        if request.method == "DELETE":
            with self._lock:
                self._files.pop(file_id, None)
            return {"id": file_id, "object": "file", "deleted": True}
        return stored.as_object()

    def _upload(self, request: Request, new_id: str) -> Outcome | JSON:
        upload = request.uploads.get("file")
        if upload is None:
            return error_outcome(
                400, "Missing the 'file' part: send the file as multipart/form-data", param="file"
            )
        purpose = str((request.body or {}).get("purpose", ""))
        filename, content = upload
        return self.add(new_id, filename, purpose, content).as_object()

    def _list(self, request: Request) -> JSON:
        purpose = request.query.get("purpose")
        with self._lock:
            files = [f for f in self._files.values() if purpose in (None, f.purpose)]
        descending = request.query.get("order", "desc") != "asc"
        files.sort(key=lambda f: (f.created_at, f.id), reverse=descending)
        after = request.query.get("after")
        if after is not None:
            ids = [f.id for f in files]
            files = files[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit", "10000"))
        page = files[:limit]
        return {
            "object": "list",
            "data": [f.as_object() for f in page],
            "first_id": page[0].id if page else "",
            "last_id": page[-1].id if page else "",
            "has_more": len(files) > limit,
        }
