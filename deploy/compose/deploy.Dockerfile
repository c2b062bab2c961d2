# The IaC deploy for compose.yaml: osls (pinned in package-lock.json) deploys serverless.yml,
# stage local, into the compose LocalStack, then exits.
FROM node:20-bookworm-slim
WORKDIR /deploy
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY serverless.yml serverless-genres.js ./
ENV SLS_TELEMETRY_DISABLED=1 \
    SLS_NOTIFICATIONS_MODE=off \
    SLS_AWS_MONITORING_FREQUENCY=500 \
    AWS_ACCESS_KEY_ID=test \
    AWS_SECRET_ACCESS_KEY=test \
    AWS_REGION=us-east-1
CMD ["npx", "--no", "osls", "deploy", "--stage", "local"]
