#!/usr/bin/env bash
# On the GPU machine: keeps one carried part of a split service bundle (tests/gpu/bundle-service.sh
# with SPLIT_MB) in /tmp/gistmem-parts, and once every part has arrived puts the whole bundle,
# checked against its sha256, where tests/gpu/run-service.sh reads it
# (.gpu/service/bundle-service.tar.xz). Run from the repository root:
#   bash tests/gpu/stage-part.sh .gpu/service/part-K
# Exit status 0 when the part is kept (and the bundle assembled, if it was the last one).
set -euo pipefail
part=${1:?usage: $0 PART_DIR}
keep=/tmp/gistmem-parts
mkdir -p "$keep"
cp "$part"/bundle-service.tar.xz.part-* "$keep/"
read -r count sum <"$part/PARTS"
have=$(ls "$keep"/bundle-service.tar.xz.part-* | wc -l)
echo "stage-part: $have of $count parts kept in $keep"
((have == count)) || exit 0
mkdir -p .gpu/service
cat "$keep"/bundle-service.tar.xz.part-* >.gpu/service/bundle-service.tar.xz
got=$(sha256sum <.gpu/service/bundle-service.tar.xz | cut -d' ' -f1)
[[ $got == "$sum" ]] || { echo "stage-part: assembled bundle has sha256 $got, not $sum" >&2; exit 1; }
echo "stage-part: .gpu/service/bundle-service.tar.xz assembled ($count parts, sha256 ok)"
