#!/usr/bin/env bash
# Builds the web console (web/, TypeScript + Vite) into web/dist, which fvd's build.rs
# embeds into the fvd binary: build fvd after this. Needs Node.js and npm
# (scripts/install-deps.sh installs Debian's). npm ci installs exactly package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/../web"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "==> npm ci (web/)"
    npm ci --no-audit --no-fund --loglevel=error
fi
echo "==> building the web console (web/dist)"
npm run --silent build
