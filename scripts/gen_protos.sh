#!/usr/bin/env bash
# Generate Python messages, gRPC stubs and mypy stubs from protos/. The only way
# generated code is made; `tests/protos/test_generated.py` fails when it is stale.
# usage: gen_protos.sh PYTHON PROTO_ROOT OUT_DIR
set -euo pipefail
py=$1 src=$2 out=$3
bin=$(dirname "$py")
rm -rf "$out"
mkdir -p "$out"
"$py" -m grpc_tools.protoc -I "$src" \
  --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" --mypy_out=quiet:"$out" \
  --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" --mypy_grpc_out=quiet:"$out" \
  "$src"/tessera/v1/*.proto
