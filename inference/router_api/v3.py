from inference.router_api.base import RouterApi


class V3Api(RouterApi):
    """`/api/v3/completions`: same request, the router stores the prompt off-chain first
    (what Cortensor's hosted gateway forwards to)."""

    version = "v3"
