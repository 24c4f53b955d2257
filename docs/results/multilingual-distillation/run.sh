#!/bin/bash
# The measured run: baseline (shipped model), then multilingual recipe with parallel distillation (pd10) and
# without it (pd0, contrastive only), each trained 100 steps at 1 thread, evaluated on stsb_multi_mt DEV.
set -e
cd /work/main
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=runs/multilingual
GE=.venv/bin/gemma-embed
LANGS="de es fr ru zh"
evaluate() {  # name model
  while [ -e /tmp/quiet.lock ]; do sleep 10; done
  local t0=$(date +%s)
  $GE eval -m "$2" --task STSBenchmarkMultilingualSTS --split dev --subset en $LANGS --dtype float32 \
      --no-cache --batch-size 64 --out $OUT/eval-$1-mono.json
  for l in $LANGS; do
    $GE eval -m "$2" --task-type STS --data $OUT/xsts-en-$l.dev.jsonl --name xSTS-en-$l --split dev \
        --dtype float32 --no-cache --batch-size 64 --out $OUT/eval-$1-xsts-en-$l.json
  done
  echo "eval $1: $(( $(date +%s) - t0 )) s" | tee -a $OUT/times.txt
}
train() {  # name
  while [ -e /tmp/quiet.lock ]; do sleep 10; done
  rm -rf $OUT/train-$1
  local t0=$(date +%s)
  $GE train $OUT/recipe-$1.toml --output $OUT/train-$1
  echo "train $1: $(( $(date +%s) - t0 )) s" | tee -a $OUT/times.txt
}
: > $OUT/times.txt
evaluate baseline src/gemma_embed/models/gemma-embed-mini
train pd10
evaluate pd10 $OUT/train-pd10/final
train pd0
evaluate pd0 $OUT/train-pd0/final
echo done | tee -a $OUT/times.txt
