#!/usr/bin/env bash
# Fine-tune a ViT: bash run_finetune.sh [--config FILE] [--key value ...]  (--help lists every key)
# Without --config, --data_dir or --dataset_url: the offline demo (configs/demo.yaml), e.g. `bash run_finetune.sh`.
# With --dataset cifar10 and no --config: the from-scratch recipe configs/vit_cifar10_scratch.yaml.
# With --device_num N > 1: N data-parallel processes launched by msrun; logs in OUTPUT_DIR/msrun_logs/.
# Several machines: the same command on each, with --node_num M --node_rank R (0 on the master) --master_addr HOST
#   [--master_port P]: M x device_num processes in all; only global rank 0 writes checkpoints.
set -uo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"
device_num=1
node_num=1
node_rank=0
master_addr=127.0.0.1
master_port="${MASTER_PORT:-8118}"
output_dir=""
has_source=0
has_config=0
dataset=""
args=("$@")
train_args=()  # what scripts/train.py gets: everything but the launcher's own options (ms_vit.config.train.LAUNCHER)
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --device_num | --node_num | --node_rank | --master_addr | --master_port)
      declare "${args[$i]#--}=${args[$((i + 1))]:-}"
      i=$((i + 1))
      continue ;;
    --device_num=* | --node_num=* | --node_rank=* | --master_addr=* | --master_port=*)
      key="${args[$i]%%=*}"
      declare "${key#--}=${args[$i]#*=}"
      continue ;;
  esac
  train_args+=("${args[$i]}")
  case "${args[$i]}" in
    --output_dir) output_dir="${args[$((i + 1))]:-}" ;;
    --output_dir=*) output_dir="${args[$i]#*=}" ;;
    --dataset) dataset="${args[$((i + 1))]:-}" ;;
    --dataset=*) dataset="${args[$i]#*=}" ;;
  esac
  case "${args[$i]}" in
    --config | --config=*) has_config=1 ;;
  esac
  case "${args[$i]}" in
    --config | --config=* | --data_dir | --data_dir=* | --dataset_url | --dataset_url=* | -h | --help) has_source=1 ;;
  esac
done
set -- "${train_args[@]+"${train_args[@]}"}"
if [ "$dataset" = "cifar10" ] && [ "$has_config" -eq 0 ]; then
  set -- --config configs/vit_cifar10_scratch.yaml "$@"
  has_source=1
fi
if [ "$has_source" -eq 0 ]; then
  set -- --config configs/demo.yaml "$@"
  output_dir="${output_dir:-outputs/demo}"
fi
for pair in "device_num:$device_num" "node_num:$node_num" "master_port:$master_port"; do
  if ! [[ "${pair#*:}" =~ ^[0-9]+$ ]] || [ "${pair#*:}" -lt 1 ]; then
    echo "error: --${pair%%:*} must be a positive integer, got '${pair#*:}'" >&2
    exit 2
  fi
done
if ! [[ "$node_rank" =~ ^[0-9]+$ ]] || [ "$node_rank" -ge "$node_num" ]; then
  echo "error: --node_rank must be 0..$((node_num - 1)) with --node_num $node_num, got '$node_rank'" >&2
  exit 2
fi
# First contact: the interpreter must import MindSpore (a venv that is not activated is the usual cause).
if ! "$PYTHON" -c "import mindspore" >/dev/null 2>&1; then
  echo "error: $(command -v "$PYTHON" || echo "$PYTHON") cannot import mindspore: activate the environment" \
    "(. .venv/bin/activate) or install it: $PYTHON -m pip install -r requirements.txt (or set PYTHON=/path/to/python)" >&2
  exit 2
fi

# The demo ends with eval on its val folder and annotated predictions for one image of each class.
finish_demo() {
  [ "$has_source" -eq 0 ] || return 0
  local out="${output_dir:-outputs/demo}"
  "$PYTHON" scripts/eval.py --ckpt "$out/best.ckpt" --data_dir dataset/demo/val --json "$out/eval/report.json" || exit
  "$PYTHON" scripts/infer.py --ckpt "$out/best.ckpt" --input "dataset/demo/val/*/*_0000.jpg" --output "$out/infer" \
    --attention || exit
  echo "demo outputs: checkpoint $out/best.ckpt, curves $out/curves.png, metrics $out/metrics.csv,"
  echo "  eval report $out/eval/report.json (+ confusion.png), annotated images $out/infer/"
}

# MindSpore's own INFO/WARNING lines (e.g. about parameters not loaded, which ms_vit reports in one line of its own)
# go to files under OUTPUT_DIR/mindspore_logs/ instead of the console; errors still reach the console.
if [ -z "${GLOG_logtostderr:-}" ]; then
  log_root="${output_dir:-outputs}"
  [[ "$log_root" = /* ]] || log_root="$(pwd)/$log_root"
  export GLOG_logtostderr=0 GLOG_stderrthreshold=2 GLOG_log_dir="$log_root/mindspore_logs"
  mkdir -p "$GLOG_log_dir" 2>/dev/null || unset GLOG_log_dir
fi

if [ "$device_num" -eq 1 ] && [ "$node_num" -eq 1 ]; then
  "$PYTHON" scripts/train.py "$@" || exit
  finish_demo
  exit 0
fi

# Several processes. msrun starts each worker with the `python` on PATH: make that the interpreter chosen here.
PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"
export PATH
logs="${output_dir:-outputs/run}/msrun_logs"
mkdir -p "$logs" || { echo "error: cannot create $logs: choose another --output_dir" >&2; exit 2; }
rm -f "$logs"/worker_*.log
# The processes on this machine count device_num; the job counts node_num x device_num. A node that cannot reach
# the master gives up after CLUSTER_TIMEOUT seconds (msrun's --cluster_time_out).
msrun --worker_num="$((node_num * device_num))" --local_worker_num="$device_num" --node_rank="$node_rank" \
  --master_addr="$master_addr" --master_port="$master_port" --cluster_time_out="${CLUSTER_TIMEOUT:-300}" \
  --log_dir="$logs" --join=True scripts/train.py "$@" >"$logs/msrun.out" 2>&1 &
launcher=$!
# Show the first worker's own lines live (MindSpore's INFO/WARNING lines stay in the log files).
until [ -f "$logs/worker_0.log" ] || ! kill -0 "$launcher" 2>/dev/null; do sleep 0.5; done
tail -n +1 -F "$logs/worker_0.log" 2>/dev/null | grep --line-buffered -v -E '^\[(INFO|WARNING)\]' &
follower=$!
wait "$launcher"
status=$?
sleep 0.5
kill "$follower" 2>/dev/null
# msrun starts a scheduler on every node whose --master_addr is one of its own addresses. With several "nodes" on one
# host (node 0 being the master), the other nodes' schedulers cannot bind the master's port and exit; their workers
# joined node 0's scheduler and finished: the job succeeded unless a worker failed.
if [ "$status" -ne 0 ] && [ "$node_rank" -gt 0 ] && grep -q "Address already in use" "$logs/scheduler.log" 2>/dev/null \
  && grep -q "Scheduler process .* exit with exception" "$logs/msrun.out" \
  && ! grep -q "worker exits with exception" "$logs/msrun.out"; then
  status=0
fi
if [ "$status" -ne 0 ]; then
  errors=$(cat "$logs"/worker_*.log 2>/dev/null | grep -E '^error: ' | sort -u)
  if [ -z "$errors" ] && [ "$node_num" -gt 1 ] && grep -qiE "time ?out|timed out|connect" "$logs/msrun.out" 2>/dev/null; then
    errors="error: node $node_rank could not join the master at $master_addr:$master_port within ${CLUSTER_TIMEOUT:-300} s: start node 0 first, check the address and port (--master_addr, --master_port) and the firewall"
  fi
  if [ -z "$errors" ]; then
    errors="error: a training process failed: see $logs/ (msrun.out and worker_*.log)"
  fi
  echo "$errors" >&2
  exit "$status"
fi
finish_demo
