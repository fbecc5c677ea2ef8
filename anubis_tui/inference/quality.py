"""Perplexity of a model and setting on the evaluation text that ships with anubis.

The figure is llama.cpp's own (``tools/perplexity/perplexity.cpp``,
``perplexity()``): the text is tokenized once with the vocabulary's special
tokens (BOS) added; it is cut into ``len(tokens) // n_ctx`` chunks of
``n_ctx`` tokens; each chunk is decoded from an empty KV cache with its first
token replaced by BOS (where the vocabulary adds one), and only the second
half is scored: the logits at positions ``n_ctx/2 .. n_ctx-2`` predict tokens
``n_ctx/2+1 .. n_ctx-1``, so the model always has at least half a window of
context. Per scored token, NLL = −log softmax(logits)[next token] in nats;
PPL = exp(mean NLL). The "±" is llama.cpp's too: PPL × the standard error of
the mean NLL, sqrt((E[NLL²] − E[NLL]²) / (N − 1)), which is
`scipy.stats.sem` (ddof 1). Tokens of one text are not independent, so that
error is optimistic; compare settings of one model with `paired_ratio`, which
uses the same tokens' differences.

The model is loaded the way the inference worker loads it (its KV cache
types, its extra-buffer rule, its threads); the computation runs in a child
process (``python -m anubis_tui.inference.quality SPEC_JSON``, see `run_child`)
so a native crash never takes the monitor down, and before any measured
segment, so its time and energy count in no figure. Results are cached in
``$XDG_CACHE_HOME/anubis/quality/`` by the GGUF's sha256 and the setting
(KV type, context, offload, flash attention, text, llama-cpp-python version,
method version); a cached figure is recorded as an Event (``quality``) like a
fresh one, with ``cached`` true.

The evaluation text is ``data/sonnets.txt``: Shakespeare's Sonnets I-XXVI,
public domain; its header names the source.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from anubis_tui.errors import AnubisError

METHOD_VERSION = 1  # bump when the computation changes: old cache entries are then ignored
DEFAULT_N_CTX = 512  # llama-perplexity's usual -c 512
TEXT_NAME = "sonnets.txt"
KV_TYPES = ("f16", "q8_0", "q4_0")  # the worker's (worker.KV_TYPES), kept here without llama_cpp
CHILD_TIMEOUT_S = 1800.0


class QualityError(AnubisError):
    """Perplexity could not be computed; the message is one line for the user."""


@dataclass(frozen=True)
class Setting:
    """What the figure depends on besides the model file."""

    kv_type: str = "f16"
    n_ctx: int = DEFAULT_N_CTX
    gpu_layers: int = 0
    flash_attn: bool = False
    threads: int | None = None  # speed only: not part of the cache key
    max_chunks: int | None = None  # None: every whole chunk of the text

    def key(self) -> dict[str, Any]:
        """The fields that change the figure, for the cache key: KV type, context, whether any
        layer is offloaded (not how many), flash attention and the chunk limit; threads are
        left out.
        """
        return {
            "kv_type": self.kv_type,
            "n_ctx": self.n_ctx,
            "offload": self.gpu_layers != 0,  # CPU and GPU kernels round differently
            "flash_attn": self.flash_attn,
            "max_chunks": self.max_chunks,
        }


@dataclass(frozen=True)
class Perplexity:
    """One perplexity figure and what it was computed on.

    `ppl` is dimensionless; `nll_mean`/`nll_se` are nats per token; `ci95`
    the 95 % Student-t interval of the mean NLL carried through exp();
    `nll` the per-token NLLs in text order (for paired comparisons).
    """

    ppl: float
    ppl_se: float
    nll_mean: float
    nll_se: float
    ci95: tuple[float, float]
    tokens: int  # scored tokens
    chunks: int
    n_ctx: int
    kv_type: str
    offload: bool
    flash_attn: bool
    model: str  # file name
    model_sha256: str
    quantization: str
    variant: str  # "" or e.g. "requantized from Q4_K_M" (see variants.py)
    text: str
    text_sha256: str
    tokens_sha256: str  # the evaluated token ids: equal means a paired comparison is valid
    llama_cpp: str
    compute_s: float
    cached: bool = False
    nll: list[float] = field(default_factory=list, repr=False)

    def payload(self) -> dict[str, Any]:
        """The ``quality`` Event's payload (JSON/msgpack types only)."""
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        d["nll"] = [round(v, 6) for v in self.nll]
        return d

    @classmethod
    def from_plain(cls, d: dict[str, Any]) -> Perplexity:
        """The inverse of `payload`: a Perplexity from a ``quality`` Event's payload or a cache
        file; KeyError or TypeError for a map that is not one.
        """
        d = dict(d)
        d["ci95"] = tuple(d["ci95"])
        return cls(**d)

    def line(self) -> str:
        """One line for the user: model, KV type, PPL ± its standard error, the 95 % interval,
        and the tokens and chunks it was scored on.
        """
        lo, hi = self.ci95
        tag = f" ({self.variant})" if self.variant else ""
        return (
            f"{self.model}{tag} kv {self.kv_type}: PPL {self.ppl:.4f} ± {self.ppl_se:.4f} "
            f"(95 % {lo:.3f}..{hi:.3f}; {self.tokens} tokens, {self.chunks} chunks of {self.n_ctx})"
        )


def eval_text() -> str:
    """The shipped evaluation text without its '#' header."""
    raw = resources.files("anubis_tui.inference").joinpath("data", TEXT_NAME).read_text("utf-8")
    lines = raw.split("\n")
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        i += 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    return "\n".join(lines[i:])


def sha256_text(text: str) -> str:
    """The hex sha256 of `text` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_dir() -> Path:
    """Where figures are cached: ``$XDG_CACHE_HOME/anubis/quality`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "anubis" / "quality"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _sha_memo() -> dict[str, Any]:
    try:
        known = json.loads((cache_dir() / "sha256.json").read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def known_sha256(path: Path) -> str | None:
    """The remembered sha256 of this file as it is now, or None: never reads the file."""
    try:
        real = path.resolve()
        st = real.stat()
    except OSError:
        return None
    hit = _sha_memo().get(str(real))
    if (
        isinstance(hit, dict)
        and hit.get("size") == st.st_size
        and hit.get("mtime_ns") == st.st_mtime_ns
        and isinstance(hit.get("sha256"), str)
    ):
        return str(hit["sha256"])
    return None


def picker_note(path: Path) -> str:
    """'241 MiB  Q4_K_M  PPL 33.10 ± 1.80' (+ the variant label) for a model list; cheap:
    the GGUF header and a cached figure of the default setting, never a hash or a run."""
    from anubis_tui.inference.models import ModelError, read_gguf
    from anubis_tui.inference.variants import variant_label

    try:
        facts = read_gguf(path)
    except ModelError:
        return "not a readable GGUF"
    parts = [f"{facts.file_size / 2**20:.0f} MiB", facts.quantization]
    q = cached_any(path, hash_file=False)
    parts.append(f"PPL {q.ppl:.2f} ± {q.ppl_se:.2f}" if q else "PPL not yet")
    label = variant_label(path)
    return "  ".join([*parts, label] if label else parts)


def model_sha256(path: Path) -> str:
    """The file's sha256, remembered by (real path, size, mtime) so a second call is a stat."""
    real = path.resolve()
    st = real.stat()
    memo = cache_dir() / "sha256.json"
    if (sha := known_sha256(real)) is not None:
        return sha
    known = _sha_memo()
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    sha = digest.hexdigest()
    known[str(real)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    with contextlib.suppress(OSError):
        _write_atomic(memo, json.dumps(known))
    return sha


def llama_cpp_version() -> str:
    """The installed ``llama_cpp_python`` package's version (importlib.metadata), "unknown" if it
    is not installed.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        return "unknown"


def cache_path(sha: str, setting: Setting, text_sha: str) -> Path:
    """The cache file of a figure: ``<model sha[:16]>-<key hash[:20]>.json`` in `cache_dir`,
    where the key is `Setting.key` with the model's and text's sha256, the llama-cpp-python
    version and `METHOD_VERSION` (any of them changing is a new file).
    """
    key = dict(
        setting.key(),
        model_sha256=sha,
        text_sha256=text_sha,
        llama_cpp=llama_cpp_version(),
        method=METHOD_VERSION,
    )
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"{sha[:16]}-{h}.json"


def cached(model: Path, setting: Setting, *, hash_file: bool = True) -> Perplexity | None:
    """The cached figure for this model file and setting, or None (never computes).

    `hash_file` False: only a remembered sha256 is used (no read of a large file)."""
    try:
        sha = model_sha256(model) if hash_file else known_sha256(model)
        if sha is None:
            return None
        path = cache_path(sha, setting, sha256_text(eval_text()))
        d = json.loads(path.read_text())
        return Perplexity.from_plain(dict(d, cached=True))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def cached_any(model: Path, *, hash_file: bool = True) -> Perplexity | None:
    """A cached figure of this file in whatever setting, the f16 KV cache first, else None.

    For lists (the model picker, `models list`): one number per file; the
    figure says which KV type and flash-attention setting it is."""
    try:
        sha = model_sha256(model) if hash_file else known_sha256(model)
    except OSError:
        return None
    if sha is None:
        return None
    text_sha = sha256_text(eval_text())
    found: list[Perplexity] = []
    for f in sorted(cache_dir().glob(f"{sha[:16]}-*.json")):
        try:
            p = Perplexity.from_plain(dict(json.loads(f.read_text()), cached=True))
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if p.model_sha256 == sha and p.text_sha256 == text_sha:
            found.append(p)
    found.sort(key=lambda p: (p.kv_type != "f16", p.flash_attn, -p.tokens))
    return found[0] if found else None


def _summary(nll: list[float]) -> tuple[float, float, float, float, tuple[float, float]]:
    """(ppl, ppl_se, mean NLL, its standard error, 95 % interval of ppl) from per-token NLLs."""
    import numpy as np
    from scipy import stats

    x = np.asarray(nll, dtype=np.float64)
    mean = float(x.mean())
    se = float(stats.sem(x)) if len(x) > 1 else math.inf
    ppl = math.exp(mean)
    if math.isfinite(se) and se > 0:
        lo, hi = stats.t.interval(0.95, len(x) - 1, loc=mean, scale=se)
        ci = (math.exp(lo), math.exp(hi))
    else:
        ci = (ppl, ppl)
    return ppl, ppl * se, mean, se, ci


def chunk_nll(llama_cpp: Any, ctx: Any, batch: Any, tokens: list[int], n_vocab: int) -> list[float]:
    """NLLs of the second half of one chunk (`tokens`, BOS already in place), in nats.

    One `llama_decode` of the whole chunk from an empty cache, logits asked
    for positions n/2 .. n-2 only (llama.cpp's `perplexity()` asks for n/2 ..
    n-1 and ignores the last row); each row's log-softmax in float64.
    """
    import numpy as np
    from scipy.special import logsumexp

    n = len(tokens)
    first = n // 2
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    batch.n_tokens = n
    for i, tok in enumerate(tokens):
        batch.token[i] = tok
        batch.pos[i] = i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = 1 if first <= i < n - 1 else 0
    rc = llama_cpp.llama_decode(ctx, batch)
    if rc != 0:
        raise QualityError(f"llama_decode failed ({rc}) while computing perplexity")
    rows = n - 1 - first
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(rows * n_vocab,))
    logits = logits.reshape(rows, n_vocab)
    out = []
    for r0 in range(0, rows, 16):  # 16 rows of float64 at a time: bounded memory at any vocab
        block = logits[r0 : r0 + 16].astype(np.float64)
        lse = logsumexp(block, axis=1)
        for j in range(block.shape[0]):
            out.append(float(lse[j] - block[j, tokens[first + r0 + j + 1]]))
    return out


def compute(model: Path, setting: Setting, *, extra_bufts: bool | None = None) -> Perplexity:
    """Load `model` as the worker does and compute its perplexity (in this process).

    Raises QualityError (one line) for a KV type llama.cpp lacks, a model that
    does not load, or a text too short for two chunks of `setting.n_ctx`.
    """
    import llama_cpp

    from anubis_tui.inference.models import ModelError, read_gguf
    from anubis_tui.inference.variants import variant_label
    from anubis_tui.inference.worker import use_extra_bufts

    if setting.kv_type not in KV_TYPES:
        raise QualityError(f"unknown KV cache type {setting.kv_type!r}; one of {KV_TYPES}")
    if setting.kv_type != "f16" and not setting.flash_attn:
        # llama.cpp cannot make a context with a quantized V cache without flash attention
        raise QualityError(f"a {setting.kv_type} KV cache needs flash attention (--flash-attn)")
    if setting.n_ctx < 16 or setting.n_ctx % 2:
        raise QualityError(f"context {setting.n_ctx} for perplexity must be even and at least 16")
    try:
        facts = read_gguf(model)
    except ModelError as e:
        raise QualityError(str(e)) from None
    kv = getattr(llama_cpp, f"GGML_TYPE_{setting.kv_type.upper()}")
    use_extra_bufts(extra_bufts)
    t0 = time.perf_counter()
    try:
        llm = llama_cpp.Llama(
            model_path=str(model),
            n_ctx=setting.n_ctx,
            n_batch=setting.n_ctx,
            n_ubatch=min(setting.n_ctx, 512),
            # Not a measured workload: every core unless told (llama.cpp's default is half)
            n_threads=setting.threads or os.cpu_count(),
            n_threads_batch=setting.threads or os.cpu_count(),
            n_gpu_layers=setting.gpu_layers,
            type_k=kv,
            type_v=kv,
            flash_attn=setting.flash_attn,
            verbose=False,
        )
    except (ValueError, RuntimeError) as e:
        raise QualityError(f"cannot load {model.name} for perplexity: {e}") from None
    text = eval_text()
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        bos = int(llama_cpp.llama_vocab_bos(vocab))
        n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        # common_tokenize(ctx, text, add_special=true, parse_special=false), as llama-perplexity
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        n_ctx = setting.n_ctx
        if len(tokens) < 2 * n_ctx:
            raise QualityError(
                f"the evaluation text is {len(tokens)} tokens for {model.name}; "
                f"perplexity at context {n_ctx} needs {2 * n_ctx}"
            )
        n_chunks = len(tokens) // n_ctx
        if setting.max_chunks is not None:
            n_chunks = max(1, min(n_chunks, setting.max_chunks))
        ctx = llm._ctx.ctx
        batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        nll: list[float] = []
        evaluated: list[int] = []
        try:
            for c in range(n_chunks):
                chunk = list(tokens[c * n_ctx : (c + 1) * n_ctx])
                if add_bos:
                    chunk[0] = bos
                evaluated.extend(chunk)
                nll.extend(chunk_nll(llama_cpp, ctx, batch, chunk, n_vocab))
        finally:
            llama_cpp.llama_batch_free(batch)
    finally:
        llm.close()
    ppl, ppl_se, mean, se, ci = _summary(nll)
    return Perplexity(
        ppl=ppl,
        ppl_se=ppl_se,
        nll_mean=mean,
        nll_se=se,
        ci95=ci,
        tokens=len(nll),
        chunks=n_chunks,
        n_ctx=n_ctx,
        kv_type=setting.kv_type,
        offload=setting.gpu_layers != 0,
        flash_attn=setting.flash_attn,
        model=model.name,
        model_sha256=model_sha256(model),
        quantization=facts.quantization,
        variant=variant_label(model),
        text=TEXT_NAME,
        text_sha256=sha256_text(text),
        tokens_sha256=hashlib.sha256(json.dumps(evaluated).encode()).hexdigest(),
        llama_cpp=llama_cpp_version(),
        compute_s=time.perf_counter() - t0,
        nll=nll,
    )


def store(model: Path, setting: Setting, result: Perplexity) -> None:
    """Put a fresh result in the cache (temp file and rename: never half-written)."""
    path = cache_path(result.model_sha256, setting, result.text_sha256)
    with contextlib.suppress(OSError):  # a cache that cannot be written costs a recompute
        _write_atomic(path, json.dumps(dict(result.payload(), cached=False)))


def run_child(model: Path, setting: Setting, *, timeout_s: float = CHILD_TIMEOUT_S) -> Perplexity:
    """The cached figure, else compute it in a child process and cache it.

    A child: llama.cpp's log and any native crash stay out of this process.
    QualityError (one line) when the child fails, with the reason it gave.
    """
    hit = cached(model, setting)
    if hit is not None:
        return hit
    from anubis_tui.inference.child import run_module

    out = run_module(
        "anubis_tui.inference.quality",
        {"model": str(model), **asdict(setting)},
        what=f"perplexity of {model.name} (kv {setting.kv_type})",
        error=QualityError,
        timeout_s=timeout_s,
    )
    try:
        result = Perplexity.from_plain(json.loads(out.strip().splitlines()[-1]))
    except (ValueError, TypeError, KeyError, IndexError):
        raise QualityError(
            f"perplexity of {model.name}: the child's answer is unreadable"
        ) from None
    store(model, setting, result)
    return result


def paired_ratio(a: Perplexity, b: Perplexity) -> tuple[float, float, float] | None:
    """PPL(a)/PPL(b) and its 95 % interval from per-token NLL differences on the same tokens.

    None when the two were not computed on the same token ids (other
    tokenizer, text or context): compare their own intervals instead.
    """
    import numpy as np
    from scipy import stats

    if a.tokens_sha256 != b.tokens_sha256 or len(a.nll) != len(b.nll) or len(a.nll) < 2:
        return None
    d = np.asarray(a.nll, dtype=np.float64) - np.asarray(b.nll, dtype=np.float64)
    mean = float(d.mean())
    se = float(stats.sem(d))
    if not se > 0:
        return math.exp(mean), math.exp(mean), math.exp(mean)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=mean, scale=se)
    return math.exp(mean), math.exp(lo), math.exp(hi)


def main(argv: list[str] | None = None) -> int:
    """Child entry: SPEC_JSON (model + Setting fields) in, one JSON line out; errors on stderr."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m anubis_tui.inference.quality SPEC_JSON", file=sys.stderr)
        return 2
    try:
        spec = json.loads(argv[0])
        model = Path(spec.pop("model"))
        setting = Setting(**spec)
    except (ValueError, TypeError, KeyError) as e:
        print(f"anubis: bad spec: {e}", file=sys.stderr)
        return 2
    import llama_cpp

    from anubis_tui.inference.worker import quiet_llama

    quiet_llama(llama_cpp)  # llama.cpp's log to stderr (the parent keeps only the last line)
    try:
        result = compute(model, setting)
    except QualityError as e:
        print(f"anubis: {e}", file=sys.stderr)
        return 1
    print(json.dumps(dict(result.payload(), cached=False)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
