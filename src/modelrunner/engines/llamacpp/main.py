"""The llama.cpp engine process: ``python -m modelrunner.engines.llamacpp.main``.

One model, one context of ``--parallel`` slots, continuous batching: see the
:mod:`modelrunner.engines.llamacpp` package. This module is its command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from modelrunner.engines.llamacpp.huge_pages import (
    has_glibc,
    host_thp_mode,
    huge_page_weights,
    process_huge_page_kib,
    reexec_env,
)
from modelrunner.engines.llamacpp.launch import default_threads
from modelrunner.engines.serving import parse_bool


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="llamacpp_server", description=__doc__)
    p.add_argument("--model", required=True, help="the .gguf file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--served-name", default=None, help="the model id /v1/models reports")
    p.add_argument("--handoff", default=None, help="a Unix socket path for mr's streams")
    p.add_argument("--n_ctx", type=int, default=4096, help="context tokens of each slot")
    p.add_argument("--n_threads", type=int, default=None)
    p.add_argument("--parallel", type=int, default=1, help="slots: requests decoded together")
    p.add_argument("--n_gpu_layers", type=int, default=0)
    p.add_argument("--embedding", action="store_true", help="serve /v1/embeddings too")
    p.add_argument("--chat-template-file", default=None)
    # The allow-listed runtime_flags (engines/flags.py).
    p.add_argument("--n_batch", type=int, default=512)
    p.add_argument("--n_ubatch", type=int, default=512)
    p.add_argument("--flash_attn", type=parse_bool, default=None)
    p.add_argument("--rope_freq_base", type=float, default=0.0)
    p.add_argument("--rope_freq_scale", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0xFFFFFFFF)
    p.add_argument("--use_mmap", type=parse_bool, default=None, help="default: see huge_pages")
    p.add_argument("--use_mlock", type=parse_bool, default=False)
    p.add_argument("--type_k", type=int, default=None)
    p.add_argument("--type_v", type=int, default=None)
    p.add_argument("--max_queue", type=int, default=64, help="requests waiting beyond the slots")
    p.add_argument("--verbose", type=parse_bool, default=False)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(_argv(argv))
    for name in ("parallel", "n_ctx", "n_batch", "n_ubatch"):
        if getattr(args, name) < 1:
            print(f"--{name} must be at least 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if args.max_queue < 0:
        print(f"--max_queue must be 0 or more, got {args.max_queue}", file=sys.stderr)
        return 2
    thp = host_thp_mode()
    huge = huge_page_weights(args.use_mmap, thp, has_glibc(), args.n_gpu_layers)
    if huge and thp == "madvise":
        env = reexec_env(os.environ)
        if env is not None:  # glibc reads its tunables only when a process starts
            module = ["-m", "modelrunner.engines.llamacpp.main"]
            os.execve(sys.executable, [sys.executable, *module, *_argv(argv)], env)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    from modelrunner.engines.llamacpp.engine import Engine, EngineConfig
    from modelrunner.engines.llamacpp.model import quiet_llama
    from modelrunner.engines.llamacpp.server import serve

    quiet_llama(args.verbose)
    config = EngineConfig(
        model_path=args.model,
        name=args.served_name or os.path.basename(args.model),
        context_size=args.n_ctx,
        parallel=args.parallel,
        threads=args.n_threads or default_threads(),
        n_batch=args.n_batch,
        n_ubatch=args.n_ubatch,
        n_gpu_layers=args.n_gpu_layers,
        embedding=args.embedding,
        chat_template_file=args.chat_template_file,
        flash_attn=args.flash_attn,
        rope_freq_base=args.rope_freq_base,
        rope_freq_scale=args.rope_freq_scale,
        seed=args.seed,
        use_mmap=not huge if args.use_mmap is None else args.use_mmap,
        use_mlock=args.use_mlock,
        type_k=args.type_k,
        type_v=args.type_v,
        max_queue=args.max_queue,
    )
    try:
        engine = Engine(config)
    except (ValueError, OSError) as exc:
        print(f"cannot load {args.model}: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("modelrunner.llamacpp").info("weights: %s", _weights_note(config.use_mmap))
    serve(args.host, args.port, engine, args.handoff)
    return 0


def _argv(argv: Sequence[str] | None) -> list[str]:
    return list(sys.argv[1:] if argv is None else argv)


def _weights_note(use_mmap: bool) -> str:
    if use_mmap:
        return "memory-mapped from the file"
    try:
        huge = process_huge_page_kib()
    except OSError:
        huge = 0
    return f"in memory, {huge // 1024} MiB of the process in transparent huge pages"


if __name__ == "__main__":
    sys.exit(main())
