"""Staff's "try this model" and "try this router": one real completion, its figures shown.

A model is tried through the whole /v1/ pipeline (`completion_serve`) under the staff member's
own internal key (the playground key apikeys makes for them), so it is limited, routed and
metered like any call, as theirs. A router is tried directly, outside the routing table, so that
one disabled or draining can be checked before it takes traffic; nothing is metered for it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from apikeys.services import apikey_playground_principal
from catalog.models import CatalogModel, Router
from catalog.routing import ModelInfo, RouterInfo, router_info, routing_table
from core.errors import ApiError
from core.middleware import new_request_id
from inference import chat_templates, upstream, validation
from inference.router_api import api_for
from inference.services import completion_serve

TRY_MAX_TOKENS = 64
DEFAULT_PROMPT = "Say hello in five words."


@dataclass(slots=True)
class TrialResult:
    ok: bool
    router: str = ""
    router_id: int | None = None
    ttfb_ms: int | None = None
    total_ms: int = 0
    prompt_tokens: object = None
    completion_tokens: object = None
    answer: str = ""
    error: str = ""
    request_id: str = ""


def model_try(*, staff, model: CatalogModel, prompt: str = DEFAULT_PROMPT) -> TrialResult:
    """One chat completion of `model` through the pipeline, as `staff`'s internal key."""
    request_id = new_request_id()
    routed: dict[str, int] = {}

    def on_routed(router: RouterInfo, ttfb_ms: int) -> None:
        routed["router_id"], routed["ttfb_ms"] = router.id, ttfb_ms

    started = time.monotonic()
    response = completion_serve(
        request_id=request_id,
        principal=apikey_playground_principal(user=staff),
        creq_parse=validation.parse_chat,
        body_getter=lambda: {
            "model": model.public_id,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": min(TRY_MAX_TOKENS, model.max_tokens),
        },
        on_routed=on_routed,
    )
    total_ms = int((time.monotonic() - started) * 1000)
    data = json.loads(response.content)  # a non-streamed call: always JSON
    router_id = routed.get("router_id")
    router = Router.objects.filter(pk=router_id).first() if router_id else None
    result = TrialResult(
        ok=response.status_code == 200,
        router=str(router) if router else "",
        router_id=router.pk if router else None,
        ttfb_ms=routed.get("ttfb_ms"),
        total_ms=total_ms,
        request_id=request_id,
    )
    if result.ok:
        result.answer = data["choices"][0]["message"]["content"]
        result.prompt_tokens = data["usage"]["prompt_tokens"]
        result.completion_tokens = data["usage"]["completion_tokens"]
    else:
        result.error = f"{response.status_code} {data['error']['code']}: {data['error']['message']}"
    return result


def router_try(*, router: Router, model: CatalogModel, prompt: str = DEFAULT_PROMPT) -> TrialResult:
    """One completion sent straight to `router` (enabled or not), rendered for `model`."""
    info = router_info(router)
    table = routing_table()
    model_info: ModelInfo | None = table.models.get(model.public_id)
    if model_info is None:
        return TrialResult(ok=False, error=f"{model.public_id} is not enabled in the catalog.")
    rendered = chat_templates.render(model_info.chat_template, [("user", prompt)])
    max_tokens = min(TRY_MAX_TOKENS, model_info.max_tokens)

    def payload_for(r: RouterInfo) -> dict:
        return api_for(r.api_version).payload(
            session_id=r.session_id,
            prompt=rendered,
            stream=False,
            timeout=model_info.request_timeout,
            client_reference=new_request_id(),
            sampling={"max_tokens": max_tokens},
        )

    started = time.monotonic()
    try:
        up = upstream.open_completion(
            routers=[info], model=model_info, payload_for=payload_for, stream=False
        )
        ttfb = int((time.monotonic() - started) * 1000)
        completion = upstream.read_completion(up)
    except ApiError as error:
        return TrialResult(
            ok=False,
            router=str(router),
            router_id=router.pk,
            total_ms=int((time.monotonic() - started) * 1000),
            error=f"{error.status} {error.code}: {error.message}",
        )
    return TrialResult(
        ok=True,
        router=str(router),
        router_id=router.pk,
        ttfb_ms=ttfb,
        total_ms=int((time.monotonic() - started) * 1000),
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        answer=completion.text,
    )
