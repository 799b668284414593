#!/usr/bin/env bash
# Packs what the GPU machine needs for the Node path (it has no Node and no registry) into
# gpu-carry/ (git-ignored, < 30 MB): the running Node binary, xz-compressed (~24 MB); dist/
# (run `npm run build` first); the packages dist/ loads at run time (bindings,
# file-uri-to-path, fflate) and the addon build's headers (node-addon-api, node-api-headers).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f dist/sae.js ] || { echo "pack.sh: dist/ is missing: run npm run build first" >&2; exit 1; }
mkdir -p gpu-carry/node_modules
node_bin="$(command -v node)"
stamp="$(node --version)"
if [ ! -f gpu-carry/node.xz ] || [ "$(cat gpu-carry/node.version 2>/dev/null)" != "$stamp" ]; then
  xz -T0 -6 -c "$node_bin" > gpu-carry/node.xz.tmp && mv gpu-carry/node.xz.tmp gpu-carry/node.xz
  echo "$stamp" > gpu-carry/node.version
fi
rm -rf gpu-carry/dist && cp -r dist gpu-carry/dist
for m in bindings file-uri-to-path fflate node-addon-api node-api-headers; do
  rm -rf "gpu-carry/node_modules/$m" && cp -r "node_modules/$m" "gpu-carry/node_modules/$m"
done
du -sh gpu-carry
