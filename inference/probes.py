"""Router health probes: GET the router's status URL and record the answer in the catalog."""

from __future__ import annotations

import requests

from catalog.models import Router
from catalog.services import router_record_health
from inference.router_api import api_for


def router_probe(*, router: Router, timeout: float = 3.0) -> Router:
    """GET the router's /api/v1/status and record its health (the beat task calls this)."""
    url = api_for(router.api_version).status_url(router.base_url.rstrip("/"))
    error = ""
    try:
        # No redirects: the router key would follow them, to wherever they point.
        response = requests.get(
            url,
            headers={"Authorization": f"Bearer {router.token}"},
            timeout=timeout,
            allow_redirects=False,
        )
        if response.status_code != 200:
            error = f"status answered HTTP {response.status_code}"
    except requests.RequestException as exc:
        error = f"{exc.__class__.__name__}"
    return router_record_health(router=router, error=error)
