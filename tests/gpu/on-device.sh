#!/bin/bash
# One run on a machine with an NVIDIA GPU, to check what the fake NVML
# cannot: the GPU tests against the real driver (MEMGUARD_TEST_NVML=real:
# a test that needs the driver fails, not skips, where there is none), then
# a real CUDA out-of-memory error in a registered PyTorch job, reported to
# a memguardd watching the real GPU.  Everything it saw goes under $OUT
# (./gpu-run without it): pytest's output and JUnit XML (each test's
# "nvml" property says which NVML it ran on), memguardctl status, incidents
# and each incident, /metrics, the daemon's log, nvidia-smi.
#
# Needs the venv (make venv; or PYTHON=an interpreter with memguard's
# dependencies) and, for the CUDA part, PyTorch with CUDA importable by that
# interpreter (TORCH_PYTHON=another one that also has memguard's
# dependencies).  Exit status: 0 when the tests passed and the CUDA OOM
# became an incident; 1 otherwise; the CUDA part is skipped, said so in
# cuda-oom.txt, without PyTorch.
set -u -o pipefail

cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
TORCH_PY=${TORCH_PYTHON:-$PY}
out=${OUT:-./gpu-run}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# The tree, not the editable install's path: a venv carried from another
# checkout points there.
export PYTHONPATH="$PWD/daemon${PYTHONPATH:+:$PYTHONPATH}"
failed=0

if ! [ -x "$PY" ] && ! command -v "$PY" >/dev/null; then
    echo "on-device: no $PY: run make venv, or set PYTHON" >&2
    exit 1
fi

{ nvidia-smi; nvidia-smi -L; nvidia-smi -q -d MEMORY; } >"$out/nvidia-smi-before.txt" 2>&1

echo "== GPU tests on the real NVML"
MEMGUARD_TEST_NVML=real "$PY" -m pytest -q -rA -p no:cacheprovider --junitxml "$out/pytest-gpu.xml" \
    tests/unit/test_gpu.py tests/e2e/test_gpu.py 2>&1 | tee "$out/pytest-gpu.txt" || failed=1

echo "== a real CUDA OOM, reported to memguardd"
run=$(mktemp -d /tmp/mgtest-gpu-XXXXXX)
printf 'sampling:\n  interval: 250ms\nrules:\n  files: ["%s/rules/default.yaml", "%s/rules/training.yaml"]\n' \
    "$PWD" "$PWD" >"$run/memguard.yaml"
"$PY" -m memguard.daemon --config "$run/memguard.yaml" --no-probes --socket "$run/memguard.sock" \
    --state-dir "$run/state" --metrics-listen 127.0.0.1:0 2>"$out/memguardd.log" &
daemon=$!
ctl() { "$PY" -m memguard.cli.main --socket "$run/memguard.sock" "$@"; }
for _ in $(seq 100); do
    ctl status >/dev/null 2>&1; rc=$?
    { [ $rc = 0 ] || [ $rc = 4 ]; } && break
    kill -0 "$daemon" 2>/dev/null || break
    sleep 0.2
done
ctl --json status >"$out/status-before.json" 2>&1 || true

# Registers, then allocates 1 GiB tensors on cuda:0 until the allocator
# fails, and reports that; while it still holds the memory, waits (10 s at
# most) for memguardd to count it as the job's (NVML's host pids) and saves
# that status.  Exit 3: no PyTorch or no CUDA here.
"$TORCH_PY" - "$run/memguard.sock" "$out" >"$out/cuda-oom.txt" 2>&1 <<'EOF'
import json, subprocess, sys, time
try:
    import torch
except ImportError as e:
    print(f"no CUDA OOM run: torch is not importable ({e})")
    sys.exit(3)
if not torch.cuda.is_available():
    print("no CUDA OOM run: torch.cuda.is_available() is False")
    sys.exit(3)
from memguard import client

socket_path, out = sys.argv[1], sys.argv[2]
reg = client.register("cuda-oom", socket_path=socket_path)
print("registered as", reg.job)
if not reg.active:
    sys.exit("memguardd did not take the registration")
held, incident = [], None
try:
    while True:
        held.append(torch.empty(2**30, dtype=torch.uint8, device="cuda:0"))
except torch.cuda.OutOfMemoryError as e:
    print(f"OutOfMemoryError after {len(held)} GiB: {e}")
    incident = client.report_gpu_oom(e, device=0, socket_path=socket_path)
print("incident", incident)
ctl = [sys.executable, "-m", "memguard.cli.main", "--socket", socket_path, "--json", "status"]
deadline = time.monotonic() + 10
while True:
    done = subprocess.run(ctl, capture_output=True, text=True, timeout=30)
    status = json.loads(done.stdout) if done.returncode in (0, 4) else {"error": done.stderr}
    job = next((j for j in status.get("jobs", ()) if j["id"] == reg.job), {})
    if job.get("gpu_bytes") or time.monotonic() > deadline:
        break
    time.sleep(0.25)
with open(f"{out}/status-holding.json", "w") as f:
    json.dump(status, f, indent=1)
print("the job's GPU memory as memguardd saw it:", job.get("gpu_bytes"))
reg.close()
sys.exit(0 if incident else 1)
EOF
oom=$?
cat "$out/cuda-oom.txt"
[ $oom = 0 ] || [ $oom = 3 ] || failed=1

ctl --json status >"$out/status.json" 2>&1 || true
ctl status >"$out/status.txt" 2>&1 || true
ctl --json incidents >"$out/incidents.json" 2>&1 || failed=1
ctl incidents >"$out/incidents.txt" 2>&1 || true
for id in $("$PY" -c 'import json, sys; print(*(i["id"] for i in json.load(sys.stdin)["incidents"]))' \
            <"$out/incidents.json"); do
    ctl --json incident show "$id" >"$out/incident-$id.json" 2>&1 || failed=1
    ctl incident show "$id" >"$out/incident-$id.txt" 2>&1 || failed=1
done
port=$(sed -n 's/.*msg="memguardd started".* metrics=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out/memguardd.log")
[ -n "$port" ] && "$PY" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
    "http://127.0.0.1:$port/metrics" >"$out/metrics.txt" 2>&1
kill -TERM "$daemon" 2>/dev/null
wait "$daemon" || failed=1
rm -rf "$run"
{ nvidia-smi; nvidia-smi -q -d MEMORY; } >"$out/nvidia-smi-after.txt" 2>&1

echo "== results in $out; $([ $failed = 0 ] && echo passed || echo FAILED)"
exit $failed
