"""The playground's server side: the browser's chat turns go through the /v1/ pipeline.

The browser never holds an API key. It posts its conversation with its session cookie and a
CSRF header; the server runs it as the user's "Playground" key in their current organization
(apikeys' `apikey_playground_principal`) through `completion_serve`, the same function behind
`POST /v1/chat/completions`: the same policy, limits, routing, failover and metering.
"""

from __future__ import annotations

import json

from django.conf import settings
from django_ratelimit.core import get_usage

from accounts.selectors import acting_membership
from apikeys.services import apikey_playground_principal
from catalog.routing import ModelInfo, routing_table
from core.errors import ApiError, InvalidRequest, RateLimited, error_response
from inference import validation
from inference.services import completion_serve

_FIELDS = ("model", "messages", "max_tokens", "temperature")


def playground_models(*, org) -> list[ModelInfo]:
    """The enabled models the organization's plan allows, by id."""
    table = routing_table()
    plan = table.plan_for(org.plan_id)
    return sorted(
        (m for m in table.models.values() if table.model_allowed(m, plan, None)),
        key=lambda m: m.public_id,
    )


def playground_body(raw: bytes) -> dict:
    """The chat request for the pipeline: only the fields the page sets, always streamed."""
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(
            "The playground sent a body that is not JSON; reload the page."
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    body = {name: data[name] for name in _FIELDS if data.get(name) is not None}
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


class LoginRequired(ApiError):
    status = 401
    type = "authentication_error"
    code = "login_required"


def playground_chat_serve(request):
    """One streamed chat turn for a logged-in user; errors in the API's JSON shape."""
    if not request.user.is_authenticated:
        return error_response(LoginRequired("Log in to use the playground."))
    rate = settings.PLAYGROUND_RATE
    usage = get_usage(request, group="playground-chat", key="user", rate=rate, increment=True)
    if usage is not None and usage["should_limit"]:
        retry = max(1, int(usage["time_left"]))
        return error_response(
            RateLimited(
                f"The playground allows {rate.replace('/m', ' messages a minute')}; wait "
                f"{retry} s. For more, call the API with your own key.",
                headers={"Retry-After": str(retry)},
            )
        )
    membership = acting_membership(request)
    try:
        principal = apikey_playground_principal(user=request.user, org=membership.org)
    except ApiError as exc:  # a suspended organization: the page shows why, as JSON
        return error_response(exc)
    return completion_serve(
        request_id=request.request_id,
        principal=principal,
        creq_parse=validation.parse_chat,
        body_getter=lambda: playground_body(request.body),
    )
