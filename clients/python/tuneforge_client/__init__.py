"""TuneForge Python SDK: files, fine-tuning jobs (with a live event stream) and models over gRPC
or REST, and OpenAI-format chat completions.

    from tuneforge_client import TuneForge

    with TuneForge(base_url="http://127.0.0.1:8000/v1", api_key="tf-...") as tf:
        f = tf.files.upload("train.jsonl")
        job = tf.jobs.create(model="SmolLM2-135M-Instruct", training_file=f.id)
        for event in tf.jobs.follow(job.id):
            print(event.message)
"""

from tuneforge_client._client import (
    AsyncFiles,
    AsyncJobs,
    AsyncModels,
    AsyncTuneForge,
    Files,
    Jobs,
    Models,
    ProgressCallback,
    TuneForge,
)
from tuneforge_client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    ServiceUnavailableError,
    TuneForgeError,
)
from tuneforge_client.plans import JobPlan  # plan (TuneForge extension)
from tuneforge_client.types import (
    ChatCompletion,
    ChatCompletionChunk,
    FileDeleted,
    FileObject,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    Model,
    ModelDeleted,
    Page,
    Training,
    TrainingParams,
)

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncFiles",
    "AsyncJobs",
    "AsyncModels",
    "AsyncTuneForge",
    "AuthenticationError",
    "BadRequestError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ConflictError",
    "FileDeleted",
    "FileObject",
    "Files",
    "FineTuningJob",
    "FineTuningJobCheckpoint",
    "FineTuningJobEvent",
    "InternalServerError",
    "JobPlan",
    "Jobs",
    "Model",
    "ModelDeleted",
    "Models",
    "NotFoundError",
    "Page",
    "PermissionDeniedError",
    "ProgressCallback",
    "RateLimitError",
    "RequestTooLargeError",
    "ServiceUnavailableError",
    "Training",
    "TrainingParams",
    "TuneForge",
    "TuneForgeError",
    "__version__",
]
