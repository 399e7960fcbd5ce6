#!/usr/bin/env bash
# Parley's in-process engine (bfloat16, CUDA) beside vLLM on the same GPU, the same support
# conversations at N = 1, 8, 32, 64 at once (bench/remote.py): a prepared run for a lent GPU
# machine, under 8 minutes. Output: the tables and ratios on stdout, bench/results/gpu-parley.json
# and gpu-vllm.json, and the vLLM server's log in bench/results/vllm-gpu.log.
#
#   bash bench/gpu.sh                       # on the GPU machine, from the repository root
#   MODEL=/models/Qwen2.5-1.5B-Instruct bash bench/gpu.sh
#   DEVICE=cpu SIZES=1 TOKENS=8 bash bench/gpu.sh   # the same steps on a CPU, to try the script
#
# What it needs, it installs: Parley's requirements into the Python it runs with (torch is
# taken as it is there), and vLLM (VLLM_SPEC) into .cache/vllm-gpu-venv unless VLLM_PYTHON
# names a Python that has it. The model: MODEL, else the largest instruct model of a known
# family in the local Hugging Face cache, else the bundled SmolLM2-135M; nothing is
# downloaded for it. Without vLLM (no network and none installed), Parley runs alone.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-1,8,32,64}
TOKENS=${TOKENS:-64}
PYTHON=${PYTHON:-python3}
VLLM_SPEC=${VLLM_SPEC:-vllm}
OUT=bench/results
mkdir -p "$OUT" .cache
started=$(date +%s)
say() { echo "[gpu.sh $(( $(date +%s) - started ))s] $*" >&2; }

if [ "$DEVICE" = cuda ] && ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu.sh: no NVIDIA GPU here (nvidia-smi failed); DEVICE=cpu runs the steps on a CPU" >&2
  exit 2
fi
[ "$DEVICE" = cuda ] && nvidia-smi -L >&2

# -- Parley's requirements, beside whatever torch is installed ------------------------------------
if ! "$PYTHON" -c "import bot.generation.local" >/dev/null 2>&1; then
  say "installing Parley's requirements"
  "$PYTHON" -m pip install --quiet -e . >"$OUT/gpu-install.log" 2>&1 \
    || { tail -5 "$OUT/gpu-install.log"; echo "gpu.sh: cannot install Parley" >&2; exit 1; }
fi

# -- the model ----------------------------------------------------------------------------------
if [ -z "${MODEL:-}" ]; then
  MODEL=$("$PYTHON" - <<'EOF'
from pathlib import Path

# Instruct models with a chat template that both engines serve, larger than the bundled one.
FAMILIES = ("Qwen2.5-", "SmolLM2-1.7B-Instruct", "SmolLM2-360M-Instruct", "Llama-3.2-")
best = (0, "")
try:
    from huggingface_hub import scan_cache_dir

    for repo in scan_cache_dir().repos:
        name = repo.repo_id.split("/")[-1]
        if repo.repo_type != "model" or "Instruct" not in name or not name.startswith(FAMILIES):
            continue
        for revision in repo.revisions:
            if (Path(revision.snapshot_path) / "config.json").exists():
                best = max(best, (revision.size_on_disk, str(revision.snapshot_path)))
except Exception:  # no cache, or no huggingface_hub: the bundled model
    pass
if not best[1]:
    from bench.workload import model_dir

    best = (0, str(model_dir()))
print(best[1])
EOF
)
fi
say "model: $MODEL"

# -- vLLM -------------------------------------------------------------------------------------------
if [ -z "${VLLM_PYTHON:-}" ]; then
  if "$PYTHON" -c "import vllm" >/dev/null 2>&1; then
    VLLM_PYTHON=$PYTHON
  else
    VLLM_PYTHON=.cache/vllm-gpu-venv/bin/python
    if ! "$VLLM_PYTHON" -c "import vllm" >/dev/null 2>&1; then
      say "installing $VLLM_SPEC into .cache/vllm-gpu-venv (a few minutes)"
      { "$PYTHON" -m venv .cache/vllm-gpu-venv \
          && timeout 240 "$VLLM_PYTHON" -m pip install --quiet "$VLLM_SPEC"; } \
        >"$OUT/vllm-install.log" 2>&1 || VLLM_PYTHON=""
    fi
  fi
fi

# Parley first, alone on the machine (a vLLM server waiting beside it still takes CPU time).
dtype=bfloat16
[ "$DEVICE" = cpu ] && dtype=auto
say "measuring Parley in-process ($DEVICE, $dtype) at N = $SIZES, $TOKENS new tokens each"
timeout 240 "$PYTHON" -m bench.remote --systems parley-local --sizes "$SIZES" --tokens "$TOKENS" \
  --model "$MODEL" --device "$DEVICE" --dtype "$dtype" --out "$OUT/gpu-parley.json"

server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; true; }
trap cleanup EXIT
if [ -z "$VLLM_PYTHON" ]; then
  say "vLLM is not available (no network, none installed: $OUT/vllm-install.log); Parley ran alone"
  exit 0
fi
port=$("$PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
vllm_dtype=bfloat16
[ "$DEVICE" = cpu ] && vllm_dtype=float32
say "starting vLLM ($vllm_dtype) on 127.0.0.1:$port"
HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 "$VLLM_PYTHON" -m vllm.entrypoints.openai.api_server \
  --model "$MODEL" --served-model-name bench --dtype "$vllm_dtype" --host 127.0.0.1 \
  --port "$port" --max-model-len 4096 --max-num-seqs 64 --seed 0 \
  >"$OUT/vllm-gpu.log" 2>&1 &
server=$!
for _ in $(seq 240); do
  curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || break
  sleep 1
done
if ! curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1; then
  say "vLLM did not start (log: $OUT/vllm-gpu.log); Parley ran alone"
  tail -5 "$OUT/vllm-gpu.log" >&2 || true
  exit 0
fi
say "measuring vLLM through Parley's remote backend"
timeout 180 "$PYTHON" -m bench.remote --systems server --sizes "$SIZES" --tokens "$TOKENS" \
  --model "$MODEL" --url "http://127.0.0.1:$port" --out "$OUT/gpu-vllm.json"
"$PYTHON" - "$OUT/gpu-parley.json" "$OUT/gpu-vllm.json" <<'EOF'
import json
import sys

parley, vllm = (json.load(open(path))["results"][0]["runs"] for path in sys.argv[1:])
print("N    Parley tok/s   vLLM tok/s   Parley / vLLM")
for n, row in parley.items():
    other = vllm.get(n)
    if other:
        ratio = row["tok_per_s"] / other["tok_per_s"]
        print(f"{n:<4} {row['tok_per_s']:>12.1f} {other['tok_per_s']:>12.1f} {ratio:>15.2f}x")
EOF
say "done"
