"""boto3 clients for one region, and AWS errors turned into one line with what to do.

boto3 is imported here, lazily (the `aws` extra): `bakery --help` never loads it.
Clients come from an injectable factory `service -> client`, so tests hand in clients
pointed at moto with their own botocore event hooks (call counting, latency, faults)
instead of patching anything. Retries use botocore's adaptive mode (client-side rate
limiting on throttles plus the standard retry of transient errors).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bakery.errors import ProviderError

ENDPOINT_ENV = "BAKERY_AWS_ENDPOINT_URL"

ClientFactory = Callable[[str], Any]

CREDENTIAL_CODES = {
    "AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
    "ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidAccessKeyId",
}
PERMISSION_CODES = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "OptInRequired"}
QUOTA_CODES = {
    "TooManyLoadBalancers", "TooManyTargetGroups", "TooManyListeners", "TooManyTargets", "TooManyTags",
    "InsufficientInstanceCapacity", "VcpuLimitExceeded", "InstanceLimitExceeded",
}


def endpoint_url(spec_value: str | None) -> str | None:
    """The endpoint override: env BAKERY_AWS_ENDPOINT_URL wins over the spec's aws.endpoint_url."""
    return os.environ.get(ENDPOINT_ENV) or spec_value


def default_factory(region: str, endpoint: str | None) -> ClientFactory:
    """Clients from the default credential chain (env, profile, SSO, instance role)."""
    try:
        import boto3
        from botocore.config import Config
    except ModuleNotFoundError:
        raise ProviderError("the AWS provider needs boto3: pip install 'bakery[aws]'") from None
    session = boto3.session.Session(region_name=region)
    config = Config(retries={"mode": "adaptive", "max_attempts": 10}, user_agent_extra="bakery")
    return lambda service: session.client(service, endpoint_url=endpoint, config=config)


class Clients:
    """One cached client per service. Clients are thread-safe; creating them is not."""

    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._factory(service)
            return self._clients[service]

    @property
    def ec2(self) -> Any:
        return self("ec2")

    @property
    def elbv2(self) -> Any:
        return self("elbv2")


def error_code(e: BaseException) -> str:
    return getattr(e, "response", {}).get("Error", {}).get("Code", "") or ""


@contextmanager
def translated(region: str) -> Iterator[None]:
    """Turn botocore's errors into a ProviderError: one line, naming the call and what to do."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    try:
        yield
    except NoCredentialsError:
        raise ProviderError(
            "AWS: no credentials found: set AWS_PROFILE (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), "
            "or run `aws sso login`"
        ) from None
    except EndpointConnectionError as e:
        raise ProviderError(f"AWS: cannot reach {e.kwargs.get('endpoint_url')}: check the network, "
                            f"aws.region ({region}) and {ENDPOINT_ENV}") from None
    except ClientError as e:
        raise ProviderError(describe(e, region)) from None
    except BotoCoreError as e:
        raise ProviderError(f"AWS: {e}") from None


def describe(e: Any, region: str) -> str:
    """One line for a ClientError: the call, the code, AWS's message (shortened), what to do."""
    code = error_code(e)
    op = getattr(e, "operation_name", "call")
    message = e.response.get("Error", {}).get("Message", "").split("Encoded authorization failure message")[0]
    message = message.strip().rstrip(".")[:200]
    if code in CREDENTIAL_CODES:
        hint = "the credentials are invalid or expired: refresh them (aws sso login, new keys) or pick another AWS_PROFILE"
    elif code in PERMISSION_CODES:
        hint = f"the credentials in use may not call {op}: grant it (README, ## AWS, lists the actions) or use another AWS_PROFILE"
    elif code in QUOTA_CODES or code.endswith("LimitExceeded"):
        hint = f"an account quota in {region} is reached: raise it in Service Quotas or remove unused resources"
    else:
        hint = ""
    return f"AWS {op}: {code}: {message}" + (f"; {hint}" if hint else "")
