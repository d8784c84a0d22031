# One image for both roles: `node --import tsx api/server.ts` (the default) or `node --import tsx workers/main.ts --queues …`.
FROM node:20-bookworm-slim
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY . .
ENV NODE_ENV=production TASKYARD_ENV=production HOST=0.0.0.0
RUN mkdir -p /backups /app/data && chown node:node /backups /app/data
USER node
# node itself, not npm: as PID 1 it gets the SIGTERM of `docker stop` and drains (npm would
# be signalled instead, and its child killed with it when it exits).
CMD ["node", "--import", "tsx", "api/server.ts"]
