#!/usr/bin/env bash
# Fetch the photographic wallpapers used to train the shipped weights (Debian packages
# plasma-workspace-wallpapers, GPL-2+/LGPL-3, and mate-backgrounds, GPL-2+) into a scratch folder.
# The photos are NOT committed (licence notices); the model card names them.
# Usage: bash scripts/fetch_training_photos.sh [OUTDIR]   (default /tmp/tadsr_photos)
set -euo pipefail
out=${1:-/tmp/tadsr_photos}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
(cd "$work" && apt-get download plasma-workspace-wallpapers mate-backgrounds >/dev/null 2>&1 \
  || { apt-get update -qq >/dev/null && apt-get download plasma-workspace-wallpapers mate-backgrounds >/dev/null; })
for f in "$work"/*.deb; do dpkg -x "$f" "$work/x"; done
# The 11 photographs among the Plasma wallpapers (the rest are illustrations), largest size of each.
for name in BytheWater ColdRipple ColorfulCups DarkestHour EveningGlow FallenLeaf Grey Kite OneStandsOut Path summer_1am; do
  best=$(for p in "$work"/x/usr/share/wallpapers/$name/contents/images/*.jpg; do
           b=$(basename "$p" .jpg); echo "$(( ${b%x*} * ${b#*x} )) $p"; done | sort -n | tail -n 1 | cut -d' ' -f2)
  cp "$best" "$out/plasma_$name.jpg"
done
# The 12 nature photographs of MATE.
for p in "$work"/x/usr/share/backgrounds/mate/nature/*.jpg; do cp "$p" "$out/mate_$(basename "$p")"; done
ls "$out" | wc -l | xargs echo "photos in $out:"
