"""The stack's ceiling on this machine: the least a Django + DRF + gevent endpoint can do for an
API call, served the way the portal is served, so the portal's rate has something to stand
beside (issue #21: "a minimal Django + DRF + gevent view with a Redis key lookup and a Redis
counter").

    gunicorn -k gevent -w 2 bench.ceiling:application              (bench/run.py starts it)

One DRF view, no middleware: it reads the bearer key's entry from Redis (one GET), counts the
request (one INCR) and answers a fixed chat completion. With CEILING_ROUTER=<url> it also
forwards the body to that router simulator over a pooled urllib3 connection first, and
answers with the router's text: the least a gateway that calls a router can do. No usage
record, no limits, no logging.
"""

from __future__ import annotations

import json
import os
import time

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="ceiling",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"],
    DATABASES={},
    REST_FRAMEWORK={
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PERMISSION_CLASSES": [],
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
        "UNAUTHENTICATED_USER": None,
    },
)
django.setup()

import redis  # noqa: E402
import urllib3  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

REDIS = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9"))
ROUTER = os.environ.get("CEILING_ROUTER", "")
_pool = urllib3.PoolManager(maxsize=64, retries=False) if ROUTER else None
PREFIX = "ceiling:key:"


class Chat(APIView):
    def post(self, request):
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if REDIS.get(PREFIX + token) is None:
            return Response({"error": {"message": "Invalid API key."}}, status=401)
        REDIS.incr("ceiling:count")
        text = "Hello."
        if _pool is not None:
            answer = _pool.request(
                "POST",
                f"{ROUTER}/api/v1/completions",
                body=json.dumps(
                    {
                        "session_id": 1,
                        "prompt": request.data["messages"][-1]["content"],
                        "prompt_type": 1,
                        "max_tokens": request.data.get("max_tokens", 16),
                        "stream": False,
                    }
                ),
                headers={
                    "Content-Type": "application/json",
                    "Authorization": "Bearer default-dev-token",
                },
            )
            text = json.loads(answer.data)["choices"][0]["text"]
        return Response(
            {
                "id": "chatcmpl-ceiling",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.data.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            }
        )


urlpatterns = [
    path("v1/chat/completions", Chat.as_view()),
    path("healthz", lambda request: HttpResponse("ok")),
]
application = get_wsgi_application()
