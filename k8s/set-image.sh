#!/bin/sh
# Build the image, tag it <package version>-<git sha> (immutable: a node never runs stale code under an old
# tag), push it, and make it THE image of k8s/ (images: in kustomization.yaml). Then: kubectl apply -k k8s/
#   k8s/set-image.sh            build, push, set
#   SKIP_BUILD=1 k8s/set-image.sh   only set the tag of the current commit (an image built elsewhere)
set -eu
cd "$(dirname "$0")/.."
registry=${REGISTRY:-192.168.2.100:5000}
if [ -n "$(git status --porcelain -- hasync_pipeline pyproject.toml .ci/requirements.lock Dockerfile)" ]; then
    echo "set-image: commit first: the tag names the commit the image is built from" >&2
    exit 1
fi
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
tag="$version-$(git rev-parse --short=12 HEAD)"
if [ -z "${SKIP_BUILD:-}" ]; then
    docker build -t "$registry/ha-sync:$tag" .
    docker push "$registry/ha-sync:$tag"
fi
python3 - "$tag" <<'PY'
import re, sys
path = "k8s/kustomization.yaml"
text = open(path).read()
text, n = re.subn(r"(?m)^(\s+newTag:).*$", rf"\1 {sys.argv[1]}", text)
assert n == 1, "expected one newTag in k8s/kustomization.yaml"
open(path, "w").write(text)
PY
echo "k8s/kustomization.yaml: image $registry/ha-sync:$tag"
