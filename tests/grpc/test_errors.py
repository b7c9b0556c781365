"""Errors over gRPC: the status code, and the same OpenAI error object REST answers with."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
from tuneforge_client import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    TuneForge,
)
from tuneforge_client._pb.tuneforge.v1 import files_pb2, fine_tuning_pb2, models_pb2

from tests.api.data import chat_jsonl
from tests.grpc.conftest import MODEL, Stubs, error_of, rest_upload


def upload_requests(filename: str, purpose: str, *chunks: bytes) -> Any:
    yield files_pb2.UploadFileRequest(
        metadata=files_pb2.UploadFileMetadata(filename=filename, purpose=purpose))
    for chunk in chunks:
        yield files_pb2.UploadFileRequest(chunk=chunk)


def grpc_error(call: Callable[[], Any]) -> tuple[grpc.StatusCode, dict[str, Any]]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return error_of(err.value)


def rest_error(response: httpx.Response) -> dict[str, Any]:
    return {**response.json()["error"], "http_status": response.status_code}


def test_not_found(stubs: Stubs, rest: httpx.Client) -> None:
    cases = [
        (lambda: stubs(stubs.files.Get, files_pb2.GetFileRequest(file_id="file-nope")),
         rest.get("/files/file-nope")),
        (lambda: stubs(stubs.jobs.Get, fine_tuning_pb2.GetJobRequest(
            fine_tuning_job_id="ftjob-nope")), rest.get("/fine_tuning/jobs/ftjob-nope")),
        (lambda: stubs(stubs.jobs.Cancel, fine_tuning_pb2.CancelJobRequest(
            fine_tuning_job_id="ftjob-nope")), rest.post("/fine_tuning/jobs/ftjob-nope/cancel")),
        (lambda: stubs(stubs.models.Get, models_pb2.GetModelRequest(model="ft:nope")),
         rest.get("/models/ft:nope")),
        (lambda: list(stubs(stubs.files.Content,
                            files_pb2.GetFileContentRequest(file_id="file-nope"))),
         rest.get("/files/file-nope/content")),
        (lambda: list(stubs(stubs.jobs.WatchEvents, fine_tuning_pb2.WatchEventsRequest(
            fine_tuning_job_id="ftjob-nope"))), rest.get("/fine_tuning/jobs/ftjob-nope/events")),
    ]
    for call, response in cases:
        code, detail = grpc_error(call)
        assert code == grpc.StatusCode.NOT_FOUND
        assert detail == rest_error(response)
        assert detail["code"] == "not_found" and detail["http_status"] == 404


def test_invalid_argument_names_the_param(stubs: Stubs, rest: httpx.Client) -> None:
    bad_line = b'{"ok": 1}\n{"broken": \n'
    code, detail = grpc_error(lambda: stubs(
        stubs.files.Upload, upload_requests("train.jsonl", "fine-tune", bad_line[:5],
                                            bad_line[5:])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail == rest_error(rest_upload(rest, bad_line))
    assert detail["code"] == "invalid_file_format" and "line 2:" in detail["message"]

    code, detail = grpc_error(lambda: stubs(
        stubs.files.Upload, upload_requests("train.jsonl", "nonsense", b"{}\n")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and detail["param"] == "purpose"
    assert detail == rest_error(rest_upload(rest, b"{}\n", purpose="nonsense"))

    # An upload that does not start with its metadata.
    code, detail = grpc_error(lambda: stubs(
        stubs.files.Upload, iter([files_pb2.UploadFileRequest(chunk=b"{}\n")])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and detail["param"] == "metadata"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-9"}, "model"),
        ({"training_file": "file-doesnotexist"}, "training_file"),
        ({"suffix": "bad suffix!"}, "suffix"),
        ({"lora": {"rank": 0}}, "lora.rank"),
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
         "method.supervised.hyperparameters.n_epochs"),
        ({"method": {"type": "reinforcement"}}, "method.type"),
        ({"method": {"type": "supervised"}, "hyperparameters": {"n_epochs": 2}},
         "hyperparameters"),
    ],
)
def test_job_create_validation_matches_rest(tf: TuneForge, rest: httpx.Client,
                                            training_file: str, body: dict[str, Any],
                                            param: str) -> None:
    full = {"model": MODEL, "training_file": training_file, **body}
    response = rest.post("/fine_tuning/jobs", json=full)
    assert response.status_code == 400
    with pytest.raises(BadRequestError) as err:
        tf.jobs.create(**full)
    assert err.value.param == param == response.json()["error"]["param"]
    assert err.value.code == response.json()["error"]["code"]
    assert err.value.grpc_code == "INVALID_ARGUMENT"


def test_unauthenticated(channel: grpc.Channel, rest: httpx.Client) -> None:
    for key in (None, "tf-wrong"):
        stubs = Stubs(channel, key)
        code, detail = grpc_error(lambda s=stubs: s(s.models.List, models_pb2.ListModelsRequest()))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert detail["code"] == "invalid_api_key" and detail["http_status"] == 401
    malformed = (("authorization", "Basic abc"),)
    with pytest.raises(grpc.RpcError) as err:
        Stubs(channel, None).files.List(files_pb2.ListFilesRequest(), metadata=malformed)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


def test_conflict_is_failed_precondition(stubs: Stubs, rest: httpx.Client,
                                         training_file: str) -> None:
    job = stubs(stubs.jobs.Create, fine_tuning_pb2.CreateJobRequest(
        model=MODEL, training_file=training_file))
    # The file is in use by an unfinished job.
    code, detail = grpc_error(lambda: stubs(stubs.files.Delete,
                                            files_pb2.DeleteFileRequest(file_id=training_file)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert detail == rest_error(rest.delete(f"/files/{training_file}"))
    assert detail["code"] == "file_in_use" and detail["http_status"] == 409
    # Pausing a job that is not running; cancelling one that has ended. (Once the API has
    # validated and queued it, so both transports see the same status.)
    for _ in range(600):
        if rest.get(f"/fine_tuning/jobs/{job.id}").json()["status"] != "validating_files":
            break
        time.sleep(0.05)
    request = fine_tuning_pb2.PauseJobRequest(fine_tuning_job_id=job.id)
    code, detail = grpc_error(lambda: stubs(stubs.jobs.Pause, request))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert detail == rest_error(rest.post(f"/fine_tuning/jobs/{job.id}/pause"))
    stubs(stubs.jobs.Cancel, fine_tuning_pb2.CancelJobRequest(fine_tuning_job_id=job.id))
    code, detail = grpc_error(lambda: stubs(
        stubs.jobs.Cancel, fine_tuning_pb2.CancelJobRequest(fine_tuning_job_id=job.id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "cancelled" in detail["message"]


def test_permission_denied(stubs: Stubs, rest: httpx.Client) -> None:
    code, detail = grpc_error(lambda: stubs(stubs.models.Delete,
                                            models_pb2.DeleteModelRequest(model=MODEL)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert detail == rest_error(rest.delete(f"/models/{MODEL}"))
    assert detail["type"] == "permission_error"


def test_bad_cursor(stubs: Stubs, training_file: str) -> None:
    job = stubs(stubs.jobs.Create, fine_tuning_pb2.CreateJobRequest(
        model=MODEL, training_file=training_file))
    code, detail = grpc_error(lambda: list(stubs(stubs.jobs.WatchEvents,
                                                 fine_tuning_pb2.WatchEventsRequest(
                                                     fine_tuning_job_id=job.id,
                                                     after="ftevent-nope"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and detail["param"] == "after"
    code, _ = grpc_error(lambda: stubs(stubs.files.List, files_pb2.ListFilesRequest(limit=0)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_standard_rich_error_decoders_read_the_details(stubs: Stubs) -> None:
    """`grpc-status-details-bin` is a google.rpc.Status on the wire."""
    status_pb2 = pytest.importorskip("google.rpc.status_pb2")
    with pytest.raises(grpc.RpcError) as err:
        stubs(stubs.files.Get, files_pb2.GetFileRequest(file_id="file-nope"))
    raw = dict(err.value.trailing_metadata())["grpc-status-details-bin"]  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(raw)
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert status.details[0].type_url == "type.googleapis.com/tuneforge.v1.ErrorDetail"


def test_sdk_exceptions(tf: TuneForge, tf_rest: TuneForge, api_server,  # type: ignore[no-untyped-def]
                        grpc_target: str, training_file: str) -> None:
    for client in (tf, tf_rest):
        with pytest.raises(NotFoundError) as not_found:
            client.files.get("file-nope")
        assert not_found.value.status_code == 404 and not_found.value.code == "not_found"
        with pytest.raises(BadRequestError) as bad:
            client.files.upload(chat_jsonl(), filename="train.csv")
        assert bad.value.code == "invalid_file_format" and bad.value.param == "file"
        with pytest.raises(PermissionDeniedError):
            client.models.delete(MODEL)
        job = client.jobs.create(model=MODEL, training_file=training_file)
        client.jobs.cancel(job.id)
        with pytest.raises(ConflictError):
            client.jobs.cancel(job.id)
    for transport in ("grpc", "rest"):
        with TuneForge(base_url=api_server.base_url, api_key="tf-wrong", grpc_target=grpc_target,
                       transport=transport) as wrong:  # type: ignore[arg-type]
            with pytest.raises(AuthenticationError) as err:
                wrong.models.list()
            assert err.value.code == "invalid_api_key"


def test_an_upload_refused_before_its_body_reports_the_refusal_not_internal(
        tf: TuneForge) -> None:
    """The server refuses a streamed upload from its metadata while the SDK is still sending
    chunks: the caller gets the server's 400 every time, never grpc's INTERNAL
    (grpc/grpc#36066)."""
    body = chat_jsonl() * 2000  # several chunks still in flight when the refusal comes
    for _ in range(12):
        with pytest.raises(BadRequestError) as bad:
            tf.files.upload(body, filename="train.csv")
        assert bad.value.code == "invalid_file_format" and bad.value.param == "file"
