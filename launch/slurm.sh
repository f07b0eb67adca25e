#!/usr/bin/env bash
# distlg on a SLURM cluster: one accelerate launcher per node, GPUS_PER_NODE workers each.
#   sbatch launch/slurm.sh run.yaml [extra distlg train flags]
# The run directory (--out in run.yaml) must be on a shared file system.
#SBATCH --job-name=distlg
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --output=storage/logs/%x-%j.out
set -euo pipefail

GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}

# srun starts one task per node; SLURM_NODEID is that node's machine rank.
srun bash -c "accelerate launch \
    --multi_gpu \
    --num_machines $SLURM_NNODES \
    --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
    --machine_rank \$SLURM_NODEID \
    --main_process_ip $MAIN_IP \
    --main_process_port $MAIN_PORT \
    --rdzv_backend static \
    --mixed_precision no \
    --dynamo_backend no \
    -m distlg train $* --resume"
