# KeyMesh server image. Build: docker build -t keymesh .   Run: see docker-compose.yml.
FROM node:24.22.3-bookworm-slim

ENV NODE_ENV=production \
    KEYMESH_HOST=0.0.0.0 \
    KEYMESH_GRPC_PORT=50051 \
    KEYMESH_HTTP_PORT=8080 \
    KEYMESH_DATA_DIR=/data \
    NPM_CONFIG_UPDATE_NOTIFIER=false

WORKDIR /app

# Dependencies first, so source edits do not invalidate this layer. tsx is a runtime dependency.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force

COPY bin ./bin
COPY migrations ./migrations
COPY server/src ./server/src
COPY dashboard/build ./dashboard/build

# Embedded-database fallback (no DATABASE_URL) keeps its data and master key here.
RUN mkdir -p /data && chown node:node /data
VOLUME ["/data"]
USER node

EXPOSE 50051 8080
# /healthz answers while the process is up; with KEYMESH_TLS_* set, probe https instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.KEYMESH_HTTP_PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

CMD ["npm", "start"]
