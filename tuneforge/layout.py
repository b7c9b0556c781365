"""Where things live in object storage: the one owner of every S3 key TuneForge writes or reads.

    files/{file_id}                          an uploaded file (and a job's results file)
    jobs/{job_id}/checkpoints/step-{n}/      a checkpoint: a PEFT adapter (or full weights)
    jobs/{job_id}/adapter/                   the final adapter, what the `ft:` model serves
    jobs/{job_id}/merged/                    full weights: a full/Spectrum job's model
    jobs/{job_id}/results.csv                the per-step metrics table

Prefixes of directories carry no trailing slash; `as_dir` adds one where a listing or a delete
must not match a sibling (`step-1/` is not `step-10/`). Base models registered at an
`s3://bucket/prefix` URL are parsed by `S3Url`.
"""

from __future__ import annotations

from dataclasses import dataclass


def file_key(file_id: str) -> str:
    return f"files/{file_id}"


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}"


def checkpoints_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}/checkpoints"


def checkpoint_prefix(job_id: str, step: int) -> str:
    return f"{checkpoints_prefix(job_id)}/step-{step}"


def adapter_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}/adapter"


def merged_prefix(job_id: str) -> str:
    return f"{job_prefix(job_id)}/merged"


def results_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}/results.csv"


def published_prefixes(job_id: str) -> list[str]:
    """What a job publishes when it succeeds, as directory prefixes to delete if it does not."""
    return [as_dir(adapter_prefix(job_id)), as_dir(merged_prefix(job_id))]


def model_prefixes(job_id: str) -> list[str]:
    """Every weight a fine-tuned model owns (adapter, merged weights, checkpoints), as
    directory prefixes to delete when the model is deleted. The results file is a file of
    its own (`files/`) and stays."""
    return [*published_prefixes(job_id), as_dir(checkpoints_prefix(job_id))]


def as_dir(prefix: str) -> str:
    return prefix.rstrip("/") + "/"


@dataclass(frozen=True)
class S3Url:
    """`s3://bucket/prefix`: a base model's weights in object storage."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Url:
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not url.startswith("s3://") or not bucket or not prefix.strip("/"):
            raise ValueError(f"expected s3://bucket/prefix, got {url!r}")
        return cls(bucket, prefix.strip("/"))

    @staticmethod
    def matches(path: str) -> bool:
        return path.startswith("s3://")
