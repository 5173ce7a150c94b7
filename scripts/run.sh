#!/usr/bin/env bash
# Installs what is missing, builds, and serves on 127.0.0.1:8000 with the
# embedded default (local PIL compositing; no token needed).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
BUILD_TYPE=Release ./scripts/build.sh
exec build/scenecomp serve "$@"
