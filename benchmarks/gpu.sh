#!/usr/bin/env bash
# lionx GPU benchmark in one command: the optimizer update step (one 64M
# leaf, ResNet-18's leaves, 1000 small leaves) against optax and
# flashoptim-jax with a measured HBM copy roofline, bytes per parameter of a
# training step (GPT-2 Small and ResNet-18 shapes), and ResNet-18 and GPT-2
# Small training-step throughput. Tables are printed and written to one
# markdown file. Meant to finish within 8 minutes on one NVIDIA GPU.
#
# Usage (from anywhere; paths are relative to the repository):
#
#   bash benchmarks/gpu.sh [OUT.md]
#       On a machine with one NVIDIA GPU and only this repository. Makes a
#       virtual environment in .gpu-venv and installs jax[cuda12] and lionx
#       with its train and bench extras (flax, flashoptim-jax) into it, in
#       a minute or two: from the wheels in
#       $LIONX_WHEELS (default: <repo>/wheels) when that directory exists
#       (no network needed), else from PyPI. OUT.md defaults to
#       gpu-results-<date>.md in the repository root; an existing file is
#       never overwritten.
#
#   bash benchmarks/gpu.sh --download-wheels DIR
#       On a machine that reaches PyPI: downloads every wheel the run needs
#       (Linux x86_64, this machine's Python version) into DIR, to carry to
#       the GPU machine as <repo>/wheels. jax[cuda12] brings the CUDA
#       libraries as wheels: about 3 GB.
#
#   bash benchmarks/gpu.sh --cpu-check OUT.md
#       The same scripts at small sizes with the current Python and no
#       install, on any device (the test suite runs this on CPU).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/benchmarks"
# lionx itself is installed with its train and bench extras (flax and the
# harness's models; flashoptim-jax).
PACKAGES=("jax[cuda12]")

die() { echo "gpu.sh: $*" >&2; exit 2; }

run_all() {  # run_all OUT PYTHON SMALL
  local out="$1" py="$2" small="$3" tmp
  tmp="$(mktemp -d)"
  local -a step_args=(--shapes abc --rounds 30) mem_args=(--models a,resnet18,c,gpt2)
  local -a train_args=()
  local -a gpt_args=(--models gpt2 --batch 8 --rounds 10)
  local limit=150
  if [[ "$small" == 1 ]]; then
    step_args=(--shapes a --small --rounds 10 --momenta fp32,int8 --extras 6-byte,path)
    mem_args=(--models tiny --grads arg,step)
    train_args=(--models gpt2 --small --batch 2 --rounds 3)
    limit=400
  fi
  {
    echo "# lionx benchmarks ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo
    "$py" -c 'import jax; d = jax.devices()[0]; print(f"Device: {d.platform} ({d.device_kind}), {jax.device_count()} device(s), jax {jax.__version__}")'
    if command -v nvidia-smi >/dev/null 2>&1; then
      echo
      echo '```'
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
      echo '```'
    fi
    echo
  } > "$tmp/head.md"
  cd "$ROOT"
  # Each script has a time limit, so that the whole run stays within about
  # 8 minutes; a script cut short still leaves the tables it printed.
  timeout "$limit" "$py" "$BENCH/update_step.py" "${step_args[@]}" \
    --out "$tmp/1.md" || echo "(update_step.py stopped: exit $?)" >> "$tmp/head.md"
  timeout "$limit" "$py" "$BENCH/memory.py" "${mem_args[@]}" \
    --out "$tmp/2.md" || echo "(memory.py stopped: exit $?)" >> "$tmp/head.md"
  if [[ "$small" == 1 ]]; then
    timeout "$limit" "$py" "$BENCH/train_throughput.py" "${train_args[@]}" \
      --out "$tmp/3.md" || echo "(train_throughput.py stopped: exit $?)" >> "$tmp/head.md"
  else
    timeout "$limit" "$py" "$BENCH/train_throughput.py" --models resnet18 \
      --batch 128 --rounds 10 --out "$tmp/3.md" \
      || echo "(train_throughput.py resnet18 stopped: exit $?)" >> "$tmp/head.md"
    timeout "$limit" "$py" "$BENCH/train_throughput.py" "${gpt_args[@]}" \
      --out "$tmp/4.md" || echo "(train_throughput.py gpt2 stopped: exit $?)" >> "$tmp/head.md"
  fi
  cat "$tmp/head.md" "$tmp"/[0-9].md > "$out" 2>/dev/null || cat "$tmp/head.md" > "$out"
  rm -rf "$tmp"
  echo "gpu.sh: wrote $out"
}

case "${1:-}" in
  --download-wheels)
    [[ $# -eq 2 ]] || die "usage: gpu.sh --download-wheels DIR"
    mkdir -p "$2"
    # For this machine's platform and Python version: the GPU machine must
    # have the same (Linux x86_64 and the same python3).
    # setuptools: to build lionx itself from the repository offline.
    python3 -m pip download --dest "$2" "${PACKAGES[@]}" "setuptools>=77" \
      "$ROOT[train,bench]"
    exit 0
    ;;
  --cpu-check)
    [[ $# -eq 2 ]] || die "usage: gpu.sh --cpu-check OUT.md"
    [[ ! -e "$2" ]] || die "$2 exists; not overwriting it"
    run_all "$(realpath -m "$2")" "${PYTHON:-python3}" 1
    exit 0
    ;;
  -*) die "unknown option $1 (see the usage at the top of this file)" ;;
esac

OUT="$(realpath -m "${1:-$ROOT/gpu-results-$(date -u +%Y%m%d-%H%M%S).md}")"
[[ ! -e "$OUT" ]] || die "$OUT exists; not overwriting it"
command -v nvidia-smi >/dev/null 2>&1 || die "no nvidia-smi: this needs an NVIDIA GPU (use --cpu-check elsewhere)"

VENV="$ROOT/.gpu-venv"
WHEELS="${LIONX_WHEELS:-$ROOT/wheels}"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
if [[ -d "$WHEELS" ]]; then
  "$VENV/bin/pip" install --quiet --no-index --find-links "$WHEELS" \
    "${PACKAGES[@]}" "$ROOT[train,bench]"
else
  "$VENV/bin/pip" install --quiet "${PACKAGES[@]}" "$ROOT[train,bench]"
fi
"$VENV/bin/python" -c 'import jax, sys; sys.exit(0 if jax.default_backend() == "gpu" else "jax sees no GPU: " + str(jax.devices()))'
run_all "$OUT" "$VENV/bin/python" 0
