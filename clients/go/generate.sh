#!/usr/bin/env bash
# Regenerate the Go stubs of the data plane (warden.proto, types.proto) into src/warden/v1,
# or with --check, fail when the committed ones differ. Needs protoc, protoc-gen-go and
# protoc-gen-go-grpc (Debian: protobuf-compiler protoc-gen-go protoc-gen-go-grpc).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
map="Mwarden/v1/warden.proto=warden/v1;wardenv1,Mwarden/v1/types.proto=warden/v1;wardenv1"
protoc -I protos --go_out="$out" --go_opt="paths=import,$map" \
  --go-grpc_out="$out" --go-grpc_opt="paths=import,$map" \
  protos/warden/v1/warden.proto protos/warden/v1/types.proto
if [ "${1:-}" = "--check" ]; then
  diff -r "$out/warden/v1" clients/go/src/warden/v1 \
    || { echo "Go stubs are out of date: run clients/go/generate.sh and commit"; exit 1; }
  echo "Go stubs up to date"
else
  rm -rf clients/go/src/warden/v1 && mkdir -p clients/go/src/warden
  cp -r "$out/warden/v1" clients/go/src/warden/v1
  echo "wrote $(ls clients/go/src/warden/v1 | wc -l) files to clients/go/src/warden/v1"
fi
