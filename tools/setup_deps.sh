#!/usr/bin/env bash
# Installs diffulex's build dependencies: the Debian 12 packages below, with apt-get (through sudo when not run as
# root), installing only those not yet installed. The README's two commands and .ci/run run it first, so this is
# the one list of them.
#
#   tools/setup_deps.sh                 the build dependencies
#   tools/setup_deps.sh --client-test   also Node.js (Debian's nodejs + npm, unless `node` and `npm` are already on
#                                       PATH) and the npm packages of the OpenAI-client test (tests/client, from
#                                       its package-lock.json)
#   tools/setup_deps.sh --fuzz          also clang 14 and its sanitizer/libFuzzer runtimes (the fuzz targets and CI's
#                                       sanitizer stage, docs/FUZZING.md)
#   tools/setup_deps.sh --dry-run       print what it would run, run nothing
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config xz-utils
  nlohmann-json3-dev libcli11-dev libfmt-dev libpcre2-dev libutf8proc-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcpp-httplib-dev libopenblas-dev
)

client_test=0 fuzz=0 dry_run=0
for arg in "$@"; do
  case "$arg" in
    --client-test) client_test=1 ;;
    --fuzz) fuzz=1 ;;
    --dry-run) dry_run=1 ;;
    *) echo "error: tools/setup_deps.sh: unknown argument '$arg' (--client-test, --fuzz, --dry-run)" >&2; exit 1 ;;
  esac
done

run() {
  echo "+ $*" >&2
  [ "$dry_run" -eq 1 ] || "$@"
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

[ "$fuzz" -eq 0 ] || PACKAGES+=(clang-14 libclang-rt-14-dev)
missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ "$client_test" -eq 1 ] && ! { command -v node && command -v npm; } >/dev/null; then
  for p in nodejs npm; do installed "$p" || missing+=("$p"); done
fi

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup_deps: all ${#PACKAGES[@]} build packages already installed" >&2
else
  command -v apt-get >/dev/null || {
    echo "error: tools/setup_deps.sh: apt-get not found (a Debian 12 machine is assumed); install by hand: ${missing[*]}" >&2
    exit 1
  }
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
      echo "error: tools/setup_deps.sh: not root and no sudo; as root run: apt-get install ${missing[*]}" >&2
      exit 1
    }
    SUDO=(sudo)
  fi
  echo "setup_deps: installing ${missing[*]}" >&2
  run "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  run "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "$client_test" -eq 1 ]; then
  # npm ci: exactly the versions of tests/client/package-lock.json; skipped when that openai version is installed.
  version() { node -p "try { require('./tests/client/$1').$2 } catch (e) { '' }" 2>/dev/null || true; }
  want=$(version package-lock.json 'packages["node_modules/openai"].version')
  have=$(version node_modules/openai/package.json version)
  if [ -n "$want" ] && [ "$want" = "$have" ]; then
    echo "setup_deps: tests/client has openai $have from npm" >&2
  else
    run npm ci --prefix tests/client --no-audit --no-fund --loglevel=error
  fi
fi
