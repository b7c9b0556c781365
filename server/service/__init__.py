"""The service layer: the rules. Transports (REST, gRPC) call it; it alone touches the store."""

from __future__ import annotations

from server.job_protocol import JobProtocol
from server.service.context import Context
from server.service.files import FileService
from server.service.jobs import JobService
from server.service.model_storage import ModelStorage
from server.service.models import ModelService
from server.service.uploads import UploadService
from server.service.usage import UsageService
from server.service.validation import ValidationService
from server.service.webhook_delivery import WebhookSender
from server.service.webhooks import WebhookService


class Services:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.files = FileService(ctx)
        self.uploads = UploadService(ctx, self.files)
        # A new job's files are validated here, in the background, before it is queued.
        self.validation = ValidationService(ctx)
        self.jobs = JobService(ctx, self.validation)
        # The worker's side of a job; the worker builds its own from the DB alone. Here for
        # in-process callers that act as a worker would (tests, benchmarks).
        self.protocol = JobProtocol(ctx.sessions, ctx.settings)
        self.models = ModelService(ctx)
        # Deleted models' weights leave S3 (on delete, and owed removals on reconcile passes).
        self.model_storage = ModelStorage(ctx)
        self.usage = UsageService(ctx)
        # Webhook endpoints, and the sender of their outbox (run by the API process).
        self.webhooks = WebhookService(ctx)
        self.webhook_sender = WebhookSender(ctx)
