#!/usr/bin/env bash
# Table 1 (I-Net, 4-switch S-Net, US-Net; 3 seeds) on Fashion-MNIST at full scale on one GPU:
# all 60,000 training images, validation on all 10,000 test images, 32x32 (Fashion-MNIST's 28x28
# resized, as every setting here), 20 epochs in the paper's batches of 1,024 at lr 0.5
# (common.DATA["fashion-mnist-full"]).
# Nine of the 18 runs share the GPU at a time (the six US-Net and S-Net runs first), each with
# 4 data-loading processes.
#
#   bash examples/paper/gpu_table1.sh            # writes docs/results/fashion-mnist-full/table1.json
#
# Needs a CUDA GPU and the Fashion-MNIST files (apt-get install dataset-fashion-mnist). Not run
# in CI. Budget: under 10 minutes on one H200 is the aim. At batches of 256 it would have taken
# about 21 (a run stopped at 530 s; docs/RESULTS.md, "Table 1 at full scale on one GPU", which
# records what each run took).
set -euo pipefail
cd "$(dirname "$0")"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_table1.sh needs a CUDA GPU')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
time python table1.py --data fashion-mnist-full --device cuda --seeds 0 1 2 --jobs 9 "$@"
