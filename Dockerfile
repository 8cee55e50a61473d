# One image for web, worker, beat and the router simulator (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, the exact versions of the lock file (`make lock` refreshes it): this
# layer is reused until requirements.lock changes.
COPY requirements.lock ./
RUN pip install --upgrade pip && pip install -r requirements.lock

COPY . .
RUN pip install --no-deps . \
 && useradd --system --uid 10001 --home-dir /app portal \
 && mkdir -p /app/var/usage-spool /app/staticfiles \
 && SECRET_KEY=build-only DEBUG=0 python manage.py collectstatic --noinput -v 0 \
 && chown -R portal /app/var /app/staticfiles

USER portal
EXPOSE 8000
# Overridden per service in docker-compose.yml.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "portal.wsgi:application"]
