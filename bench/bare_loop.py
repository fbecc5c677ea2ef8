"""A bare llama-cpp-python generation loop: no pipe, no records, no control thread.

Same settings as the anubis worker (model, threads, context, max tokens,
greedy sampling, the chat-formatted built-in prompts, the same extra-buffer
choice) and the same measure: decode tok/s = (tokens − 1) / (last − first
token stamp), pooled over requests. Prints one JSON object.

    python bench/bare_loop.py MODEL DURATION_S [THREADS] [GPU_LAYERS] [MAX_TOKENS]
"""

from __future__ import annotations

import json
import sys
import time

import llama_cpp

from anubis_tui.inference.worker import BUILTIN_PROMPTS, chat, quiet_llama, use_extra_bufts


def main() -> None:
    model, duration = sys.argv[1], float(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else None
    gpu_layers = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    max_tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 128
    quiet_llama(llama_cpp)
    use_extra_bufts(None)  # the worker's choice, so both run the same kernels
    llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=1024,
        n_threads=threads,
        n_gpu_layers=gpu_layers,
        seed=1,
        verbose=False,
    )
    eos = llm.token_eos()
    intervals = 0
    decode_ns = 0
    generated = 0
    end = time.monotonic() + duration
    i = 0
    while time.monotonic() < end:
        tokens = llm.tokenize(
            chat(BUILTIN_PROMPTS[i % len(BUILTIN_PROMPTS)]).encode(), add_bos=True, special=True
        )
        i += 1
        llm.reset()
        first = last = 0
        n = 0
        for tok in llm.generate(tokens, temp=0.0, reset=True):
            last = time.monotonic_ns()
            if n == 0:
                first = last
            n += 1
            if tok == eos or n >= max_tokens:
                break
        generated += n
        if n > 1:
            intervals += n - 1
            decode_ns += last - first
    llm.close()
    print(
        json.dumps(
            {
                "decode_tps": intervals / (decode_ns / 1e9),
                "tokens_generated": generated,
                "requests": i,
            }
        )
    )


if __name__ == "__main__":
    main()
