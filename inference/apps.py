from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The catalog's admin probes routers and shows breaker states and requests in flight
        # through this registry: the catalog sits below inference and does not import it.
        from catalog.router_client import register_router_client
        from inference.balancer import breaker_state, routers_in_flight
        from inference.probes import router_probe

        register_router_client(
            probe=router_probe, breaker_state=breaker_state, in_flight=routers_in_flight
        )
