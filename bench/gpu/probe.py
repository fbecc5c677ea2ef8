"""A plain inference probe for crash hunting: load the model, decode 32 greedy tokens, print ok.

    python bench/gpu/probe.py MODEL [--gpu-layers N] [--extra-bufts auto|on|off] [--amx-perm]

Run plainly and under launchers (scalene) to tell which setting crashes llama.cpp.
--amx-perm asks the kernel for AMX tile state first (arch_prctl ARCH_REQ_XCOMP_PERM).
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ARCH_GET_XCOMP_PERM = 0x1022
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
SYS_ARCH_PRCTL = 158  # x86-64


def amx_permission(request: bool) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    mask = ctypes.c_uint64(0)
    rc = libc.syscall(SYS_ARCH_PRCTL, ARCH_GET_XCOMP_PERM, ctypes.byref(mask))
    out = (
        f"xcomp perm before: rc={rc} mask=0x{mask.value:x} (tiledata={bool(mask.value >> 18 & 1)})"
    )
    if request:
        rc = libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
        err = ctypes.get_errno()
        libc.syscall(SYS_ARCH_PRCTL, ARCH_GET_XCOMP_PERM, ctypes.byref(mask))
        out += f"; request rc={rc} errno={err} after mask=0x{mask.value:x}"
    return out


def main() -> None:
    faulthandler.enable()
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--extra-bufts", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--amx-perm", action="store_true")
    ap.add_argument("--maps", action="store_true", help="list shared objects loaded so far")
    a = ap.parse_args()
    print(amx_permission(a.amx_perm), flush=True)
    if a.maps:
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if ".so" in ln})
        print("numpy loaded:", "numpy" in sys.modules, "modules:", len(sys.modules))
        for lib in libs:
            print("maps:", lib)
    import llama_cpp

    from anubis_tui.inference.worker import BUILTIN_PROMPTS, DecodeLoop, chat, use_extra_bufts

    extra = use_extra_bufts({"auto": None, "on": True, "off": False}[a.extra_bufts])
    print(f"extra_bufts={extra}", flush=True)
    llm = llama_cpp.Llama(
        model_path=a.model, n_ctx=512, n_gpu_layers=a.gpu_layers, n_threads=a.threads, verbose=True
    )
    loop = DecodeLoop(llm, llama_cpp)
    toks = llm.tokenize(chat(BUILTIN_PROMPTS[0]).encode(), add_bos=True, special=True)
    n, t = 0, time.perf_counter()
    for _ in loop.generate(toks):
        n += 1
        if n >= 64:
            break
    print(
        f"ok {n} tokens, {n / (time.perf_counter() - t):.1f} tok/s, sampling {loop.sampling.mode}"
    )


if __name__ == "__main__":
    main()
