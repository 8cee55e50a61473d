"""Router URLs: only http(s), never link-local or cloud metadata addresses (private addresses
are where routers live), in the admin and in apply_config; the probe follows no redirect."""

from __future__ import annotations

import http.server
import threading

import pytest

from catalog.models import Router, RouterPool
from catalog.routerurl import router_url_problem
from catalog.services import ConfigInvalid, catalog_apply_config
from inference.probes import router_probe

ALLOWED = [
    "http://127.0.0.1:5010",
    "http://10.0.0.5:5010",
    "http://192.168.1.10",
    "http://172.16.3.4:8080/base",
    "https://router.example.com",
    "http://[fd12:3456::1]:5010",
    "http://routersim:5010",
]
REFUSED = [
    "ftp://10.0.0.5/",
    "file:///etc/passwd",
    "gopher://10.0.0.5:70/",
    "javascript:alert(1)",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.1.1:5010",
    "http://[fe80::1]:5010",
    "http://[fe80::a%25eth0]:5010",
    "http://[::ffff:169.254.169.254]/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.Google.Internal./",
    "http://metadata/",
    "http://instance-data/latest/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://2852039166/",  # 169.254.169.254 as one number
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://169.254.43518/",
    "http://0.0.0.0:5010",
    "http://user:pass@10.0.0.5:5010",
    "http://:5010",
    "http://10.0.0.5:99999",
    "not a url",
]


@pytest.mark.parametrize("url", ALLOWED)
def test_allowed(url):
    assert router_url_problem(url) is None


@pytest.mark.parametrize("url", REFUSED)
def test_refused(url):
    assert router_url_problem(url) is not None


# --- where URLs are entered -----------------------------------------------------------------


def _router_form(pool, url: str) -> dict:
    return {"pool": pool.pk, "name": "r", "base_url": url, "api_version": "v1",
            "session_id": "1", "token": "t", "weight": "1", "enabled": "on",
            "connect_timeout": "3.0"}  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["ftp://10.0.0.5/", "http://169.254.169.254", "http://[fe80::1]"])
def test_the_admin_refuses_them(client, staff, url):
    pool = RouterPool.objects.create(name="p")
    client.force_login(staff)

    response = client.post("/admin/catalog/router/add/", _router_form(pool, url))

    assert response.status_code == 200  # the form again
    assert not Router.objects.exists()
    body = response.content.decode()
    assert "URL" in body and ("refused" in body or "valid URL" in body)


@pytest.mark.django_db
def test_the_admin_takes_a_private_address(client, staff):
    pool = RouterPool.objects.create(name="p")
    client.force_login(staff)

    response = client.post("/admin/catalog/router/add/", _router_form(pool, "http://10.1.2.3:5010"))

    assert response.status_code == 302
    assert Router.objects.get().base_url == "http://10.1.2.3:5010"


@pytest.mark.django_db
def test_the_pool_page_adds_no_routers_past_the_router_form(client, staff):
    """The pool page lists its routers read-only (state, figures, actions): routers are added
    on the router page, whose form refuses these URLs (above)."""
    pool = RouterPool.objects.create(name="p")
    client.force_login(staff)
    prefix = "routers"
    data = {
        "name": "p",
        "description": "",
        f"{prefix}-TOTAL_FORMS": "1",
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-0-name": "r",
        f"{prefix}-0-base_url": "http://metadata.google.internal",
        f"{prefix}-0-api_version": "v1",
        f"{prefix}-0-session_id": "1",
        f"{prefix}-0-weight": "1",
        f"{prefix}-0-enabled": "on",
    }

    client.post(f"/admin/catalog/routerpool/{pool.pk}/change/", data)

    assert not Router.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["ftp://10.0.0.5", "http://169.254.169.254", "http://2852039166"])
def test_apply_config_refuses_them_and_changes_nothing(url):
    config = {"pools": [{"name": "p", "routers": [{"url": url, "session_id": 1}]}]}

    with pytest.raises(ConfigInvalid, match=r"pools\[0\]\.routers\[0\]\.url"):
        catalog_apply_config(config=config)
    assert not RouterPool.objects.exists()


# --- the probe --------------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A real HTTP server: `redirect_to` set, it answers 302 there; else 200, recording hits."""

    redirect_to: str | None = None
    hits: list

    def do_GET(self):
        type(self).hits.append((self.path, self.headers.get("Authorization")))
        if self.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.redirect_to + self.path)
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def _serve(handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.django_db
def test_the_probe_does_not_follow_a_redirect():
    target_handler = type("Target", (_Recorder,), {"hits": []})
    target = _serve(target_handler)
    bouncer_handler = type(
        "Bouncer",
        (_Recorder,),
        {"hits": [], "redirect_to": f"http://127.0.0.1:{target.server_address[1]}"},
    )
    bouncer = _serve(bouncer_handler)
    try:
        pool = RouterPool.objects.create(name="p")
        router = Router.objects.create(
            pool=pool,
            base_url=f"http://127.0.0.1:{bouncer.server_address[1]}",
            session_id=1,
            token="operator-secret",
        )

        router = router_probe(router=router)

        assert len(bouncer_handler.hits) == 1
        assert target_handler.hits == []  # the router key went nowhere else
        assert router.health == Router.Health.UNHEALTHY
        assert "302" in router.last_error
    finally:
        bouncer.shutdown()
        target.shutdown()
