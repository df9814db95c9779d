#!/usr/bin/env bash
# Train the shipped SDAN: set up .venv/, install the training photographs, build the camera-diverse corpus
# (datasets/sdan_corpus, once), then train options/train_sdan_pretrained.yml (32x8; amp auto: bf16 where the CPU has
# it natively, else float32), resuming where it stopped.
#   bash scripts/train_pretrained.sh            the first stage, 6000 iterations (resumes from experiments/ or from
#                                               checkpoints/)
#   bash scripts/train_pretrained.sh --keep     copy the latest training state into checkpoints/ (a few MB, kept in
#                                               the repository so that a training survives the machine)
#   bash scripts/train_pretrained.sh --finetune the second stage, what ships: the first stage's iteration 6000
#                                               (checkpoints/SDAN_size_32x8/) 2000 iterations more on the clean-target
#                                               corpus (datasets/sdan_corpus_clean, once) with noise_input and
#                                               ref_noise; then python -m sdan_basicsr.weights
#                                               experiments/SDAN_finetune_32x8/models/net_g_2000.pth
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OPT=options/train_sdan_pretrained.yml
cd "$ROOT"
option() { sed -n "s/^$1: *//p" "$OPT"; }  # the value of a key of the option file, its indent included
NAME="$(option name)"
EXP="$ROOT/experiments/$NAME"
KEEP="$ROOT/checkpoints/$NAME"

latest_state() { { ls "$1"/*.state 2>/dev/null || true; } | sed 's#.*/##; s#\.state$##' | sort -n | tail -1; }

if [ "${1:-}" = "--keep" ]; then
    iter="$(latest_state "$EXP/training_states")"
    [ -n "$iter" ] || { echo "no training state under $EXP/training_states" >&2; exit 1; }
    mkdir -p "$KEEP" && rm -f "$KEEP"/*.state  # one state kept; the kept weights of other iterations stay
    cp "$EXP/training_states/$iter.state" "$EXP/models/net_g_$iter.pth" "$KEEP/"
    echo "kept iteration $iter in $KEEP"
    exit 0
fi

bash "$ROOT/scripts/setup_env.sh"
bash "$ROOT/scripts/get_photos.sh"
if [ "${1:-}" = "--finetune" ]; then
    if [ ! -f datasets/sdan_corpus_clean/demo_meta.json ]; then
        .venv/bin/sdan-make-demo datasets/sdan_corpus_clean --camera random --photos debian skimage \
            --no-color-variation --num-scenes 186 --num-test 10 --size 768 --residual 3 --clean-targets --jobs 2
    fi
    exec .venv/bin/python sdan_basicsr/train.py -opt "$OPT" --auto_resume --force_yml \
        name=SDAN_finetune_32x8 datasets:train:dataroot=datasets/sdan_corpus_clean/train \
        datasets:val:dataroot=datasets/sdan_corpus_clean/test datasets:train:noise_profile=true \
        datasets:val:noise_profile=true network_g:noise_input=true train:ref_noise=true path:strict_load_g=false \
        path:pretrain_network_g=checkpoints/SDAN_size_32x8/net_g_6000.pth 'train:optim_g:lr=!!float 1.3e-4' \
        'train:scheduler:periods=[2000]' 'train:scheduler:restart_weights=[1]' train:total_iter=2000 val:val_freq=1000
fi
kept="$(latest_state "$KEEP")"
total="$(option '  total_iter')"
running="$(latest_state "$EXP/training_states")"
if [ -n "$kept" ] && [ "$kept" -ge "$total" ] && [ -z "$running" ]; then
    echo "the first stage is done: the kept state is iteration $kept (total_iter $total), its iteration $total is" \
         "$KEEP/net_g_$total.pth; the second stage: bash scripts/train_pretrained.sh --finetune"
    exit 0
fi
if [ ! -f datasets/sdan_corpus/demo_meta.json ]; then
    .venv/bin/sdan-make-demo datasets/sdan_corpus --camera random --photos debian skimage --no-color-variation \
        --num-scenes 186 --num-test 10 --size 768 --residual 3 --jobs 2
fi
if [ -n "$kept" ] && [ -z "$running" ]; then
    mkdir -p "$EXP/training_states" "$EXP/models"
    cp "$KEEP/$kept.state" "$EXP/training_states/" && cp "$KEEP/net_g_$kept.pth" "$EXP/models/"
    echo "resuming from the kept iteration $kept"
fi
exec .venv/bin/python sdan_basicsr/train.py -opt "$OPT" --auto_resume
