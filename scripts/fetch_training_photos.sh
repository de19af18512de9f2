#!/usr/bin/env bash
# Fetch the photographic wallpapers used to train and validate the shipped weights (Debian packages
# plasma-workspace-wallpapers, GPL-2+/LGPL-3, and mate-backgrounds, GPL-2+) into a scratch folder:
#   OUTDIR/train/  19 photos the shipped models were trained on
#   OUTDIR/val/     8 photos held out for choosing settings (never trained on): plasma Kite, Path, EveningGlow, mate
#                   LadyBird, and scikit-image's chelsea and coffee and scikit-learn's china and flower (saved from those packages)
# The photos are NOT committed (licence notices); the model card names them.
# Usage: bash scripts/fetch_training_photos.sh [OUTDIR]   (default /tmp/tadsr_photos)
set -euo pipefail
out=${1:-/tmp/tadsr_photos}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out/train" "$out/val"
(cd "$work" && apt-get download plasma-workspace-wallpapers mate-backgrounds >/dev/null 2>&1 \
  || { apt-get update -qq >/dev/null && apt-get download plasma-workspace-wallpapers mate-backgrounds >/dev/null; })
for f in "$work"/*.deb; do dpkg -x "$f" "$work/x"; done
held_out=" plasma_Kite plasma_Path plasma_EveningGlow mate_LadyBird "
place() { case "$held_out" in *" $1 "*) echo "$out/val/$1.jpg";; *) echo "$out/train/$1.jpg";; esac; }
# The 11 photographs among the Plasma wallpapers (the rest are illustrations), largest size of each.
for name in BytheWater ColdRipple ColorfulCups DarkestHour EveningGlow FallenLeaf Grey Kite OneStandsOut Path summer_1am; do
  best=$(for p in "$work"/x/usr/share/wallpapers/$name/contents/images/*.jpg; do
           b=$(basename "$p" .jpg); echo "$(( ${b%x*} * ${b#*x} )) $p"; done | sort -n | tail -n 1 | cut -d' ' -f2)
  cp "$best" "$(place "plasma_$name")"
done
# The 12 nature photographs of MATE.
for p in "$work"/x/usr/share/backgrounds/mate/nature/*.jpg; do cp "$p" "$(place "mate_$(basename "$p" .jpg)")"; done
# The four held-out photos that ship with scikit-image / scikit-learn, as files beside them (the model card's validation set).
"${PYTHON:-$(dirname "$0")/../.venv/bin/python}" -c "
from tadsr.data import heldout_photos
for k, im in heldout_photos().items(): im.save('$out/val/' + k + '.png')"
echo "photos in $out/train: $(ls "$out/train" | wc -l); held out in $out/val: $(ls "$out/val" | wc -l)"
