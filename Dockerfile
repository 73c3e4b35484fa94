# The sunblend operator image for machines with Docker: `docker build -t ghcr.io/sunblend/sunblend:0.1.0 .`
# `make image` (hack/image.sh) is the supported, tested build and needs no Docker; this file keeps
# the same layout: a virtualenv at /opt/sunblend holding the versions pinned in requirements.lock,
# user sunblend (65532:65532), entrypoint /opt/sunblend/bin/sunblend.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY operator ./operator
# requirements.lock without its hashes, as constraints: `.` decides what installs (no dev tools),
# the lock decides which versions.
RUN sed -e 's/ *\\$//' -e '/--hash=/d' -e '/^ *#/d' requirements.lock > /tmp/pins.txt \
    && python -m venv /opt/sunblend \
    && /opt/sunblend/bin/pip install --no-cache-dir -c /tmp/pins.txt .

FROM python:3.11-slim
ARG VERSION=0.1.0
ARG REVISION=unknown
RUN groupadd --gid 65532 -K GID_MAX=65532 sunblend \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        -K UID_MAX=65532 -K GID_MAX=65532 sunblend
COPY --from=build /opt/sunblend /opt/sunblend
ENV PATH=/opt/sunblend/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLCONFIGDIR=/tmp
LABEL org.opencontainers.image.source=https://github.com/sunblend/sunblend \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.revision=$REVISION
USER 65532:65532
ENTRYPOINT ["/opt/sunblend/bin/sunblend"]
CMD ["run"]
