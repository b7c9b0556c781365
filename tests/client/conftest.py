"""The SDK and CLI tests share the gRPC tests' fixtures (live server, tenants, clients)."""

from tests.grpc.conftest import (  # noqa: F401 - fixtures
    arest,
    channel,
    grpc_target,
    rest,
    stubs,
    tf,
    tf_b,
    tf_rest,
    training_file,
)
