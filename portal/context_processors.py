from django.conf import settings


def portal(request):
    return {
        "PORTAL_BASE_URL": settings.PORTAL_BASE_URL,
        "API_BASE_URL": settings.PORTAL_BASE_URL + "/v1",
    }
