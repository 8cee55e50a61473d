from celery import shared_task

from catalog.models import Router
from inference.probes import router_probe


@shared_task(ignore_result=True, time_limit=120, soft_time_limit=100)
def probe_routers() -> int:
    """Probe /api/v1/status of every enabled router and record its health."""
    count = 0
    for router in Router.objects.filter(enabled=True):
        router_probe(router=router)
        count += 1
    return count
