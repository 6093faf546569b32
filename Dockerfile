# syntax=docker/dockerfile:1
# One image for every Parley app. Which app a container runs is its first
# argument or PARLEY_APP: gateway (the default; the standalone server when no
# PARLEY_REMOTE_SERVICES), presence, receipts, group, file-offer, or cli.

# Build stage: the full toolchain, compiles TypeScript to dist/.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json nest-cli.json ./
COPY apps apps
COPY libs libs
RUN npm run build

# Runtime stage: production dependencies and the compiled code only.
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    PARLEY_DATA_DIR=/data
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force \
 && mkdir -p /data /files && chown node:node /data /files
COPY --from=build /app/dist dist
COPY bin bin
COPY --chmod=0755 deploy/docker-entrypoint.sh deploy/docker-entrypoint.sh
# The embedded store of a standalone container; unused with REDIS_URL.
VOLUME /data
USER node
# The working directory, the container user's own: where `cli file accept` saves (mount a directory here to keep the
# files) and `cli file send` finds relative paths. The entrypoint finds the apps in /app wherever it runs.
WORKDIR /files
# MQTT (gateway) and HTTP /healthz, /readyz, /metrics (every app).
EXPOSE 1883 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["/app/deploy/docker-entrypoint.sh", "probe", "/healthz"]
ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]
