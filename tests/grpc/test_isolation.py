"""Tenants over gRPC: another organization's objects do not exist (NOT_FOUND)."""

from __future__ import annotations

import grpc
import pytest
from tuneforge_client._pb.tuneforge.v1 import files_pb2, fine_tuning_pb2, models_pb2

from tests.conftest import until_validated
from tests.grpc.conftest import MODEL, Stubs
from tuneforge.domain import JobStatus, fine_tuned_model_name


async def test_tenants_cannot_reach_each_others_objects(stubs: Stubs, stubs_b: Stubs,
                                                        training_file: str, services) -> None:  # type: ignore[no-untyped-def]
    job = stubs(stubs.jobs.Create, fine_tuning_pb2.CreateJobRequest(
        model=MODEL, training_file=training_file, suffix="mine"))
    assert await until_validated(services, job.id) == "queued"
    await services.protocol.advance(job.id, [JobStatus.QUEUED], JobStatus.RUNNING)
    model = fine_tuned_model_name(MODEL, job.organization_id, "mine", job.id)
    await services.protocol.succeed(job.id, fine_tuned_model=model, result_files=[],
                                    trained_tokens=1)

    file_id, job_id = training_file, job.id
    calls = [
        (stubs_b.files.Get, files_pb2.GetFileRequest(file_id=file_id)),
        (stubs_b.files.Delete, files_pb2.DeleteFileRequest(file_id=file_id)),
        (stubs_b.jobs.Get, fine_tuning_pb2.GetJobRequest(fine_tuning_job_id=job_id)),
        (stubs_b.jobs.Cancel, fine_tuning_pb2.CancelJobRequest(fine_tuning_job_id=job_id)),
        (stubs_b.jobs.Pause, fine_tuning_pb2.PauseJobRequest(fine_tuning_job_id=job_id)),
        (stubs_b.jobs.Resume, fine_tuning_pb2.ResumeJobRequest(fine_tuning_job_id=job_id)),
        (stubs_b.jobs.ListEvents,
         fine_tuning_pb2.ListJobEventsRequest(fine_tuning_job_id=job_id)),
        (stubs_b.jobs.ListCheckpoints,
         fine_tuning_pb2.ListJobCheckpointsRequest(fine_tuning_job_id=job_id)),
        (stubs_b.models.Get, models_pb2.GetModelRequest(model=model)),
        (stubs_b.models.Delete, models_pb2.DeleteModelRequest(model=model)),
    ]
    for method, request in calls:
        with pytest.raises(grpc.RpcError) as err:
            stubs_b(method, request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, method  # type: ignore[attr-defined]
    for method, request in (
        (stubs_b.files.Content, files_pb2.GetFileContentRequest(file_id=file_id)),
        (stubs_b.jobs.WatchEvents, fine_tuning_pb2.WatchEventsRequest(fine_tuning_job_id=job_id)),
    ):
        with pytest.raises(grpc.RpcError) as err:
            list(stubs_b(method, request))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]

    assert file_id not in [f.id for f in stubs_b(stubs_b.files.List,
                                                 files_pb2.ListFilesRequest()).data]
    assert job_id not in [j.id for j in stubs_b(stubs_b.jobs.List,
                                                fine_tuning_pb2.ListJobsRequest()).data]
    assert model not in [m.id for m in stubs_b(stubs_b.models.List,
                                               models_pb2.ListModelsRequest()).data]
    # Another tenant's file cannot train a job either (as over REST: invalid_file_id).
    with pytest.raises(grpc.RpcError) as err:
        stubs_b(stubs_b.jobs.Create, fine_tuning_pb2.CreateJobRequest(
            model=MODEL, training_file=file_id))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    # The owner still sees all of it.
    assert stubs(stubs.files.Get, files_pb2.GetFileRequest(file_id=file_id)).id == file_id
    assert stubs(stubs.models.Get, models_pb2.GetModelRequest(model=model)).id == model
