"""A job's `integrations` (experiment tracking): refused at creation when the worker could
not honour them, so that none is ever silently dropped (`docs/tracking.md`).

The worker logs the runs (`trainer/tracking/`); this side only checks that it can: a known
type with its settings, a W&B key for the organization (unless W&B runs offline), an MLflow
tracking server. No key ever leaves the settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.service.requests import IntegrationRequest
from tuneforge.domain import Integration, IntegrationType
from tuneforge.errors import invalid
from tuneforge.settings import TrackingSettings

INVALID = "invalid_integration"
# Depends on the server's settings, not on the request alone.
NOT_CONFIGURED = "integration_not_configured"


def check_integrations(settings: TrackingSettings, organization_id: str,
                       integrations: Sequence[IntegrationRequest] | None,
                       ) -> list[dict[str, Any]] | None:
    """The integrations as the job stores them (and the worker receives them), or a 400
    naming the first one that cannot be honoured."""
    if not integrations:
        return None
    return [_checked(settings, organization_id, integration, f"integrations[{index}]")
            for index, integration in enumerate(integrations)]


def _checked(settings: TrackingSettings, organization_id: str,
             integration: IntegrationRequest, where: str) -> dict[str, Any]:
    kinds = [kind.value for kind in IntegrationType]
    if integration.type not in kinds:
        raise invalid(f"Unknown integration type {integration.type!r}; supported: "
                      f"{', '.join(map(repr, kinds))}.", param=f"{where}.type", code=INVALID)
    kind = IntegrationType(integration.type)
    for other in kinds:
        if other != kind and getattr(integration, other) is not None:
            raise invalid(f"An integration of type '{kind}' takes '{kind}' settings, not "
                          f"'{other}'.", param=f"{where}.{other}", code=INVALID)
    if getattr(integration, kind.value) is None:
        raise invalid(f"An integration of type '{kind}' needs its '{kind}' settings.",
                      param=f"{where}.{kind}", code=INVALID)
    if kind == IntegrationType.WANDB and not settings.wandb_usable(organization_id):
        raise invalid("Weights & Biases is not configured for your organization on this "
                      "server (no W&B API key); ask its operator to add one, or leave this "
                      "integration out.", param=f"{where}.wandb", code=NOT_CONFIGURED)
    if kind == IntegrationType.MLFLOW:
        assert integration.mlflow is not None
        if integration.mlflow.tracking_uri and not settings.mlflow_allow_integration_uri:
            raise invalid("This server does not let an integration choose its MLflow "
                          "tracking server; leave tracking_uri out to use the server's own.",
                          param=f"{where}.mlflow.tracking_uri", code=NOT_CONFIGURED)
        if not integration.mlflow.tracking_uri and not settings.mlflow_tracking_uri:
            raise invalid("No MLflow tracking server is configured on this server; "
                          "give mlflow.tracking_uri" + (
                              "" if settings.mlflow_allow_integration_uri else
                              " (once its operator allows it)")
                          + " or leave this integration out.",
                          param=f"{where}.mlflow", code=NOT_CONFIGURED)
    stored = Integration.model_validate(integration.model_dump(exclude_none=True))
    return stored.model_dump(mode="json", exclude_none=True)
