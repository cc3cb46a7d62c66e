#!/usr/bin/env bash
# Fetch the files the ReCo authors published for one benchmark, so that evaluation and ReCo+ training
# can skip recomputing them. This script is for users who are online; nothing in the code downloads.
#
#   bash scripts/download_artefacts.sh DATASET DIR [--index]
#     DATASET  cityscapes | coco_stuff | kitti_step
#     DIR      where to put the files (created if needed)
#     --index  also fetch the 4.3 GB ImageNet index pickle
#
# Downloads resume where they stopped (curl -C -) and are checked against the server's size.
# At the end the config lines to set are printed.
set -euo pipefail

BASE="https://www.robots.ox.ac.uk/~vgg/research/reco/shared_files"
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
dataset="$1"; dir="$2"; shift 2
with_index=0
for arg in "$@"; do
  case "$arg" in --index) with_index=1 ;; *) usage ;; esac
done
case "$dataset" in cityscapes|coco_stuff|kitti_step) ;; *) echo "unknown dataset: $dataset" >&2; usage ;; esac
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
mkdir -p "$dir"

fetch() {  # fetch URL FILE: resumable, then compare with the server's Content-Length
  local url="$1" file="$2" remote local_size
  echo "fetching $url"
  curl -fL --retry 5 --retry-delay 5 -C - -o "$file.part" "$url" || {
    # curl exits 33 when the server refuses ranges on an already complete file
    [ -s "$file.part" ] || { echo "download failed: $url" >&2; exit 1; }; }
  remote=$(curl -fsIL "$url" | tr -d '\r' | awk 'tolower($1)=="content-length:"{n=$2} END{print n}')
  local_size=$(wc -c < "$file.part" | tr -d ' ')
  if [ -n "$remote" ] && [ "$remote" != "$local_size" ]; then
    echo "size mismatch for $file: $local_size bytes, expected $remote; run again to resume" >&2
    exit 1
  fi
  mv "$file.part" "$file"
}

refs="$dir/deit_s_16_sin_in_train_ce_ta_cat_to_img_feature_k50.pkl"
masks_tar="$dir/reco_${dataset}_pseudo_masks.tar"
masks_dir="$dir/reco_${dataset}_pseudo_masks"
weights="$dir/reco_plus_dlp_rn101_${dataset}.pt"

[ -f "$refs" ] || fetch "$BASE/$dataset/$(basename "$refs")" "$refs"
[ -f "$weights" ] || fetch "$BASE/$dataset/$(basename "$weights")" "$weights"
if [ ! -d "$masks_dir" ]; then
  [ -f "$masks_tar" ] || fetch "$BASE/$dataset/$(basename "$masks_tar")" "$masks_tar"
  mkdir -p "$masks_dir.tmp" && tar -xf "$masks_tar" -C "$masks_dir.tmp" && mv "$masks_dir.tmp" "$masks_dir"
fi
# the archive may hold one top folder (e.g. dt_crf/): point at the folder that holds the PNGs
pseudo=$(find "$masks_dir" -name '*.png' -print -quit | xargs -r dirname)
[ "$dataset" = kitti_step ] && pseudo=$(dirname "$pseudo")
if [ "$with_index" = 1 ]; then
  index="$dir/filename_to_ViT_L_14_336px_train_img_embedding.pkl"
  [ -f "$index" ] || fetch "$BASE/$(basename "$index")" "$index"
fi

cat <<MSG

Done. Set in configs/reco_${dataset}.yaml:
  copy $refs into your dir_dataset (it is read from there under this name)
Set in configs/reco_plus_${dataset}.yaml:
  dir_pseudo_masks: $pseudo
Evaluate the published ReCo+ weights:
  bash scripts/reco_plus_${dataset}.sh $weights
MSG
if [ "$with_index" = 1 ]; then
  echo "Move $(basename "$index") into your dir_imagenet; it is converted into the index on first use."
fi
