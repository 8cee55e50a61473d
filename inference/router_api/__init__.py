"""Router API versions: a base class and one module per version (v1, v3)."""

from __future__ import annotations

from inference.router_api.base import RouterApi
from inference.router_api.v1 import V1Api
from inference.router_api.v3 import V3Api

_APIS: dict[str, RouterApi] = {"v1": V1Api(), "v3": V3Api()}


def api_for(version: str) -> RouterApi:
    return _APIS.get(version, _APIS["v1"])
