"""The request an async job runs, kept in the store beside the job record.

A job must be runnable again by any ingress replica after the one that accepted it is
gone, so what it needs lives in the store, never only in one replica's memory:

- ``jobs/<owner>/requests/<job id>.json``: a :class:`StoredRequest`, the route, the
  HTTP context the route reads (scheme, host, headers without credentials, the
  owner and request id) and the body. A JSON body is kept as it came; a multipart
  body as its parts in order, each text field inline and each uploaded file as
  its own object:
- ``jobs/<owner>/inputs/<job id>/<n>.bin``: one uploaded file (an input image or mask).

Both are bounded by the limits the request already passed (the route's body limit,
``images.max_upload_bytes`` and ``images.max_input_images``), and are deleted with
the job record when it expires (``storage.jobs.JobStore.delete``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from storage.base import JOBS_PREFIX, JSON_CONTENT_TYPE, ImageStore, check_key, check_owner

INPUT_CONTENT_TYPE = "application/octet-stream"


def job_request_key(owner: str, job_id: str) -> str:
    return check_key(f"{JOBS_PREFIX}{check_owner(owner)}/requests/{job_id}.json")


def job_inputs_prefix(owner: str, job_id: str) -> str:
    return f"{JOBS_PREFIX}{check_owner(owner)}/inputs/{job_id}/"


def job_input_key(owner: str, job_id: str, index: int) -> str:
    return check_key(f"{job_inputs_prefix(owner, job_id)}{index}.bin")


class FormPart(BaseModel):
    """One multipart part: a text field inline, or a file kept as a store object."""

    name: str
    value: str | None = None
    file_key: str | None = None


class StoredRequest(BaseModel):
    """What replaying a job's request needs; plain data, no Starlette."""

    model_config = ConfigDict(extra="ignore")

    endpoint: str
    scheme: str = "http"
    server: tuple[str, int] | None = None
    root_path: str = ""
    headers: list[tuple[str, str]] = Field(default_factory=list)
    context: dict[str, str] = Field(default_factory=dict)  # owner, request id
    body: str | None = None  # a JSON body, as sent
    form: list[FormPart] | None = None  # a multipart body's parts, in order


class UploadedFile(BaseModel):
    """A file part before it is stored: its field name and bytes."""

    name: str
    data: bytes


class JobRequests:
    """Save, load and delete the stored requests of jobs and their input files."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    def save(
        self,
        owner: str,
        job_id: str,
        request: StoredRequest,
        parts: list[FormPart | UploadedFile] | None = None,
    ) -> StoredRequest:
        """Store each uploaded file of ``parts`` as an object, then the request itself."""
        if parts is not None:
            form = []
            for index, part in enumerate(parts):
                if isinstance(part, UploadedFile):
                    key = job_input_key(owner, job_id, index)
                    self.store.put(key, part.data, INPUT_CONTENT_TYPE)
                    part = FormPart(name=part.name, file_key=key)
                form.append(part)
            request = request.model_copy(update={"form": form})
        self.store.put(
            job_request_key(owner, job_id), request.model_dump_json().encode(), JSON_CONTENT_TYPE
        )
        return request

    def load(self, owner: str, job_id: str) -> StoredRequest | None:
        raw = self.store.get(job_request_key(owner, job_id))
        return None if raw is None else StoredRequest.model_validate_json(raw)

    def load_file(self, key: str) -> bytes | None:
        return self.store.get(key)

    def delete(self, owner: str, job_id: str) -> None:
        for key in self.store.list(job_inputs_prefix(owner, job_id), limit=1 << 20):
            self.store.delete(key)
        self.store.delete(job_request_key(owner, job_id))
