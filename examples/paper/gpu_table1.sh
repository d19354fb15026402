#!/usr/bin/env bash
# Table 1 (I-Net, 4-switch S-Net, US-Net; 3 seeds) on Fashion-MNIST at full scale on one GPU:
# all 60,000 training images, validation on all 10,000 test images, 32x32 (Fashion-MNIST's 28x28
# resized, as every setting here), 20 epochs in batches of 256 (common.DATA["fashion-mnist-full"]).
# Six of the 18 runs share the GPU at a time, each with 4 data-loading processes.
#
#   bash examples/paper/gpu_table1.sh            # writes docs/results/fashion-mnist-full/table1.json
#
# Needs a CUDA GPU and the Fashion-MNIST files (apt-get install dataset-fashion-mnist). Not run
# in CI. Budget: under 10 minutes on one H200 is the aim; docs/RESULTS.md records what a run took.
set -euo pipefail
cd "$(dirname "$0")"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_table1.sh needs a CUDA GPU')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
time python table1.py --data fashion-mnist-full --device cuda --seeds 0 1 2 --jobs 6 "$@"
