#!/usr/bin/env bash
# The GPU checks of issue 13 in one device run: tests/gpu (CUDA parity, empty circuit, fast ACDC ==
# reference, EAP cuda == cpu, bf16 discovery) and bench/gpu_arch.py (EAP-IG, EAP, bounded fast ACDC
# on a ~1.1B Llama-shaped and a GPT-2-small-shaped random model). Outputs land under $OUT.
#
#   scripts/gpu_check.sh wheels   # HERE, where PyPI is reachable: fetch into .whl/ the few wheels the
#                                 # bare device image lacks (see below); once per checkout
#   scripts/gpu_check.sh          # ON THE DEVICE, from the repo root: the checks (< 10 min)
#
# The device machine is bare and offline: no project venv (.venv holds torch, far over the 64 MiB a
# run may carry), no pip index. Its image has python3 3.12 with torch, transformers 5.17, pytest,
# pytest-timeout, httpx, safetensors, tokenizers, numpy, matplotlib, networkx, pyyaml. It lacks
#   - transformer-lens: its metadata is read at model load (discovery.models checks the version
#     against the cached architecture list; nothing of it is imported), installed --no-deps;
#   - transformers 5.24 (the version the parity tests and the venv use; 5.17 is there), --no-deps:
#     its needs (huggingface-hub >=1.31, tokenizers 0.23.x, safetensors 0.8) are met by the image.
# So the run carries .whl/ (about 12 MiB) and installs it into /tmp/site; the code runs from the
# working tree (PYTHONPATH=repo root), no `pip install -e .` needed. The device call:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Steps are bounded by `timeout` (tests 240 s, bench 300 s) so $OUT comes back either way.
set -uo pipefail
cd "$(dirname "$0")/.."
WHL_DIR="${WHL_DIR:-.whl}"
SITE="${SITE:-/tmp/site}"  # where the carried wheels are installed (--target)
WHEELS=(transformer-lens==4.3.0 transformers==5.24.0)

if [[ "${1:-}" == "wheels" ]]; then
    mkdir -p "$WHL_DIR"
    py="${PYTHON:-.venv/bin/python}"; [[ -x "$py" ]] || py=python3
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
        -d "$WHL_DIR" "${WHEELS[@]}" || { echo "pip download failed (is PyPI reachable here?)" >&2; exit 1; }
    if [[ "$WHL_DIR" == ".whl" ]] && ! grep -qx '/.whl/' .git/info/exclude 2>/dev/null; then
        echo "note: add '/.whl/' to .git/info/exclude so the wheels stay out of git (and name .whl in carry)" >&2
    fi
    ls -l "$WHL_DIR"
    exit 0
fi

OUT="${OUT:-$(mktemp -d)}"  # the device sets OUT; elsewhere a fresh temporary folder
echo "outputs under $OUT"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
    date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    "$PY" --version
} >"$OUT/env.txt" 2>&1

if compgen -G "$WHL_DIR/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$WHL_DIR"/*.whl >>"$OUT/env.txt" 2>&1 || { echo "installing $WHL_DIR failed" | tee -a "$OUT/env.txt"; exit 1; }
    export PYTHONPATH="$SITE:$PYTHONPATH"
fi
"$PY" - >>"$OUT/env.txt" 2>&1 <<'EOF'
import importlib.metadata as m, torch, transformers
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__)
print("transformer-lens", m.version("transformer-lens"))
EOF
if [[ $? -ne 0 ]]; then
    echo "environment check failed (transformer-lens metadata missing? run 'scripts/gpu_check.sh wheels' here and carry .whl):" >&2
    cat "$OUT/env.txt" >&2
    exit 1
fi
cat "$OUT/env.txt"

status=0
echo "== pytest tests/gpu"
timeout 240 "$PY" -m pytest tests/gpu -q -p no:cacheprovider -o addopts="-ra" --timeout 200 2>&1 \
    | tee "$OUT/pytest_gpu.txt" || status=1
echo "== bench/gpu_arch.py"
bench_args=(--acdc-seconds 45)
# without CUDA (trying the script on a CPU machine) the tiny shapes only: the 1B model needs a GPU
"$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" || bench_args=(--quick --device cpu)
timeout 300 "$PY" bench/gpu_arch.py "${bench_args[@]}" 2>"$OUT/bench_gpu_arch.log" \
    | tee "$OUT/bench_gpu_arch.md" || { status=1; tail -20 "$OUT/bench_gpu_arch.log"; }
exit $status
