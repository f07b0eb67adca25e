#!/usr/bin/env bash
# distlg on a SLURM cluster: one accelerate launcher per node, GPUS_PER_NODE workers each.
#   sbatch launch/slurm.sh run.yaml [extra distlg train flags]
# Submit from the repository root: SLURM opens the log file below before the job starts and
# does not create its folder (storage/logs/ is tracked, so a fresh clone has it). The run
# directory (--out in run.yaml) must be on a shared file system.
#SBATCH --job-name=distlg
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --output=storage/logs/%x-%j.out
set -euo pipefail

export GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)  # reads all: no SIGPIPE
export MAIN_IP
export MAIN_PORT=${MAIN_PORT:-29500}

# srun starts one task per node; SLURM_NODEID is that node's machine rank. The script's
# arguments reach distlg train unchanged (quoted), whatever spaces they hold.
srun bash -c 'accelerate launch \
    --multi_gpu \
    --num_machines "$SLURM_NNODES" \
    --num_processes "$((SLURM_NNODES * GPUS_PER_NODE))" \
    --machine_rank "$SLURM_NODEID" \
    --main_process_ip "$MAIN_IP" \
    --main_process_port "$MAIN_PORT" \
    --rdzv_backend static \
    --mixed_precision no \
    --dynamo_backend no \
    -m distlg train "$@" --resume' distlg-train "$@"
