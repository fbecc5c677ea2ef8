#!/usr/bin/env bash
# Stage everything a bare GPU machine needs, here, into .dev/gpu (git-ignored, carried by device):
# a trimmed llama-cpp-python source, wheels for what the GPU image lacks, and the default model
# in chunks of 40 MiB (one chunk per device call: 64 MiB travel per call, the working tree too).
# See ../shared/reference/gpu-recipe.md. Then bench/gpu/run.sh runs there.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=.dev/gpu
LLAMA_VERSION=$(python3 -c "import llama_cpp; print(llama_cpp.__version__)")
mkdir -p "$OUT/wheels" "$OUT/model"
if [ ! -f "$OUT/llama-src.tar.xz" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==$LLAMA_VERSION"
  tar xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
  src=$(echo "$tmp"/llama_cpp_python-*/)
  (cd "$src" && rm -rf examples docs docker tests .git .github)
  v="$src/vendor/llama.cpp"
  (cd "$v" && rm -rf models docs media benches tests examples pocs scripts gguf-py conversion ci \
      requirements app .git .github .devops)
  (cd "$v/tools" && for d in *; do [ "$d" = mtmd ] || [ ! -d "$d" ] || rm -rf "$d"; done)
  for b in cann et hexagon metal musa opencl openvino sycl virtgpu vulkan webgpu zdnn zendnn; do
    rm -rf "$v/ggml/src/ggml-$b"
  done
  tar cJf "$OUT/llama-src.tar.xz" -C "$src" .
  rm -rf "$tmp"
fi
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64)
pkgs=(py-spy==0.4.3 scalene==2.4.0 cloudpickle==3.1.3 pydantic==2.13.4 pydantic_core==2.46.4
      annotated_types typing-inspection==0.4.2 rich==15.0.0 markdown-it-py mdurl==0.1.2
      Pygments==2.20.0 diskcache==5.6.3 msgpack==1.2.4 psutil==7.2.2 nvidia-ml-py==13.615.71
      typing_extensions==4.16.0  # 4.16: anyio 4.16 (the server extra) imports its sentinel
      # llama-cpp-python[server] for the attach check (issue 23), pure-Python wheels
      uvicorn==0.54.0 click==8.4.0 h11==0.16.0 fastapi==0.165.0 starlette==1.10.0
      anyio==4.16.0 idna==3.13 sniffio==1.3.1 annotated-doc==0.0.7 opentelemetry-api==1.45.2
      sse-starlette==3.7.0 starlette-context==0.3.6 pydantic-settings==2.14.1
      python-dotenv==1.2.2 PyYAML==6.0.3
      # the app itself, for ui_cost there (issue 21)
      textual==8.2.8 platformdirs==4.14.8 mdit-py-plugins==0.7.0)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${plat[@]}" -d "$OUT/wheels" "${pkgs[@]}"
# matplotlib for `report --plot` there (issue 26): about 24 MB, so it travels with the last,
# small model chunk rather than with the setup call (64 MiB per command)
mkdir -p "$OUT/plot-wheels"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${plat[@]}" -d "$OUT/plot-wheels" matplotlib==3.11.2 contourpy==1.4.0 cycler==0.12.1 \
  fonttools==4.68.0 kiwisolver==1.5.1 pillow==13.0.0 pyparsing==3.3.3 python-dateutil==4.0.0 \
  six==1.17.0 packaging==26.4
model=$(python3 -c "from anubis_tui.inference.models import default_model; print(default_model())")
if [ ! -f "$OUT/model/chunk.00" ]; then
  split -b 40M -d "$model" "$OUT/model/chunk."
  sha256sum "$model" | cut -d' ' -f1 > "$OUT/model/sha256"
fi
ls -la "$OUT" "$OUT/model"; du -sh "$OUT/wheels"
