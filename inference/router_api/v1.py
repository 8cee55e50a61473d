from inference.router_api.base import RouterApi


class V1Api(RouterApi):
    """`/api/v1/completions`: the prompt goes straight to the session's miners."""

    version = "v1"
