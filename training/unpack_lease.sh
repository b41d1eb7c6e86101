#!/usr/bin/env bash
# Puts what `lease.sh poll` returned into a repository checkout (developer machine):
#   bash training/unpack_lease.sh FILES_AT [REPO] [NAME]
# FILES_AT: the folder the device tool copied $OUT to. From results.tar.gz:
# models/NAME/ (all but the shards), tests/fixtures/NAME/, training/logs/NAME/; the
# model-*.safetensors shards go to models/NAME/; ckpt.pt.NN parts (a FAILED run) are joined
# into training/out/NAME/ckpt.pt (git-ignored). Then it lists what it wrote.
set -euo pipefail
FROM=${1:?usage: unpack_lease.sh FILES_AT [REPO] [NAME]}
REPO=${2:-$(git rev-parse --show-toplevel)}
NAME=${3:-gistmem-16k}
[ -f "$FROM/results.tar.gz" ] && tar xzf "$FROM/results.tar.gz" -C "$REPO"
shopt -s nullglob
shards=("$FROM"/model-*.safetensors)
[ -f "$FROM/model.safetensors" ] && shards+=("$FROM/model.safetensors")
if [ ${#shards[@]} -gt 0 ]; then
  mkdir -p "$REPO/models/$NAME"
  cp "${shards[@]}" "$REPO/models/$NAME/"
fi
parts=("$FROM"/ckpt.pt.*)
if [ ${#parts[@]} -gt 0 ]; then
  mkdir -p "$REPO/training/out/$NAME"
  cat "${parts[@]}" > "$REPO/training/out/$NAME/ckpt.pt"
fi
for d in "models/$NAME" "tests/fixtures/$NAME" "training/logs/$NAME" "training/out/$NAME"; do
  [ -d "$REPO/$d" ] && { echo "$d:"; ls -l "$REPO/$d"; }
done
if [ -f "$REPO/models/$NAME/model.safetensors.index.json" ]; then  # every shard it names
  python3 - "$REPO/models/$NAME" <<'PY'
import json, os, sys
d = sys.argv[1]
want = set(json.load(open(os.path.join(d, "model.safetensors.index.json")))["weight_map"].values())
missing = [f for f in want if not os.path.exists(os.path.join(d, f))]
print("shards named by the index:", sorted(want), "missing:", missing)
sys.exit(1 if missing else 0)
PY
fi
