# One image for every role of the Backprop Service. The compose file picks the role with
# the command: `migrate`, `api --host 0.0.0.0 --port 8000` or `worker`.
#
#   docker build -t backprop-service .
#   docker run --rm -e BACKPROP_DATABASE_URL=... -e BACKPROP_REDIS_URL=... backprop-service worker
#
# No secrets are baked in: every setting comes from BACKPROP_* environment variables at run
# time (see .env.example and README.md).
FROM python:3.11.13-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies get a layer of their own: it is rebuilt only when pyproject.toml changes,
# not on every code change. The list is read from [project].dependencies (no dev extras).
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The service itself, installed as a regular (non-editable) package without touching the
# dependencies installed above. The migrations ship inside the package.
COPY README.md ./
COPY core ./core
COPY api ./api
COPY workers ./workers
COPY migrations ./migrations
COPY cli ./cli
COPY client ./client
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info

# Run as an unprivileged user; its home is the working folder (only a SQLite fallback
# database would ever be written there — compose uses PostgreSQL). uid/gid 1000 is the
# first regular id (UID_MIN/GID_MIN of Debian's login.defs), so useradd takes it without a
# warning; the image has no other user at or above 1000 but `nobody`.
RUN groupadd --gid 1000 backprop \
    && useradd --uid 1000 --gid backprop --create-home --home-dir /home/backprop \
       --shell /usr/sbin/nologin backprop
USER 1000:1000
WORKDIR /home/backprop

EXPOSE 8000
ENTRYPOINT ["backprop"]
CMD ["--help"]
