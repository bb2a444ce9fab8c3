# Sourced by the device-session scripts: what every step on the GPU machine needs.
# The machine has no network: .whl/ carries the harness's pure-Python dependencies (cp312) and
# .dev/ Debian's bubblewrap and libcap2 .debs (both git-excluded, carried by the device tool).

environment() {  # bwrap from the .debs, a git identity
  if ! command -v bwrap >/dev/null && ls "$ROOT"/.dev/bubblewrap_*.deb >/dev/null 2>&1; then
    mkdir -p /tmp/bw && for deb in "$ROOT"/.dev/*.deb; do dpkg -x "$deb" /tmp/bw; done
  fi
  export PATH=/tmp/bw/usr/bin:$PATH
  export LD_LIBRARY_PATH=/tmp/bw/lib/x86_64-linux-gnu:/tmp/bw/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@localhost
  [ -d /tmp/site ] && export PYTHONPATH=/tmp/site
  return 0
}

install_wheels() {  # the wheels into the image's Python, else into /tmp/site
  python3 -m pip install -q --no-index --find-links "$ROOT/.whl" optuna gitpython rustbpe tenacity pydantic \
    genai-prices platformdirs filelock anthropic openai 2>&1 | tail -3
  if ! python3 -c 'import optuna, git, rustbpe, tenacity, pydantic, genai_prices, platformdirs, openai' 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$ROOT"/.whl/*.whl
    export PYTHONPATH=/tmp/site
  fi
}
