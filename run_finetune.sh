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
has_help=0
config=""
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
    --config) has_config=1; config="${args[$((i + 1))]:-}" ;;
    --config=*) has_config=1; config="${args[$i]#*=}" ;;
    -h | --help) has_help=1 ;;
  esac
  case "${args[$i]}" in
    --config | --config=* | --data_dir | --data_dir=* | --dataset_url | --dataset_url=* | -h | --help) has_source=1 ;;
  esac
done
set -- "${train_args[@]+"${train_args[@]}"}"
if [ "$dataset" = "cifar10" ] && [ "$has_config" -eq 0 ]; then
  set -- --config configs/vit_cifar10_scratch.yaml "$@"
  config=configs/vit_cifar10_scratch.yaml
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

# The run's output folder: --output_dir, else the recipe's output_dir, else the default (outputs/run). It must be
# writable before anything starts: MindSpore's log folder (below) and every checkpoint go there.
config_output_dir() {
  "$PYTHON" - "$1" 2>/dev/null <<'PY'
import sys

import yaml

with open(sys.argv[1]) as handle:
    values = yaml.safe_load(handle)
print(values.get("output_dir") or "" if isinstance(values, dict) else "")
PY
}
run_dir="$output_dir"
if [ -z "$run_dir" ] && [ -n "$config" ] && [ -f "$config" ]; then
  run_dir="$(config_output_dir "$config")"
fi
run_dir="${run_dir:-outputs/run}"
if [ "$has_help" -eq 0 ]; then
  probe="$run_dir/.write_test_$$"
  if ! mkdir -p "$run_dir" 2>/dev/null || ! { : >"$probe"; } 2>/dev/null; then
    echo "error: cannot write the output folder $run_dir: choose another --output_dir" >&2
    exit 2
  fi
  rm -f "$probe"
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
if [ -z "${GLOG_logtostderr:-}" ] && [ "$has_help" -eq 0 ]; then
  log_root="$run_dir"
  [[ "$log_root" = /* ]] || log_root="$(pwd)/$log_root"
  export GLOG_logtostderr=0 GLOG_stderrthreshold=2 GLOG_log_dir="$log_root/mindspore_logs"
  # MindSpore refuses GLOG_logtostderr=0 without a log folder (a ValueError traceback): drop all three together.
  mkdir -p "$GLOG_log_dir" 2>/dev/null || unset GLOG_log_dir GLOG_logtostderr GLOG_stderrthreshold
fi

if [ "$device_num" -eq 1 ] && [ "$node_num" -eq 1 ]; then
  "$PYTHON" scripts/train.py "$@" || exit
  finish_demo
  exit 0
fi

# Several processes. msrun starts each worker with the `python` on PATH: make that the interpreter chosen here.
PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"
export PATH
logs="$run_dir/msrun_logs"
mkdir -p "$logs" || { echo "error: cannot create $logs: choose another --output_dir" >&2; exit 2; }
rm -f "$logs"/worker_*.log "$logs"/scheduler.log
# msrun starts a scheduler on every node whose --master_addr is one of its own addresses. With several "nodes" on one
# host (node 0, the master, started first), a later node's scheduler cannot bind the port node 0's holds and exits,
# while its workers join node 0's scheduler. Recognised here by asking the socket layer whether that port is already
# listened on at a local address, not by a scheduler.log line (MindSpore logs "Address already in use" only at
# WARNING level, so GLOG_v=3 hides it).
second_scheduler=0
if [ "$node_rank" -gt 0 ] && "$PYTHON" ms_vit/distributed.py port_taken "$master_addr" "$master_port" 2>/dev/null; then
  second_scheduler=1
fi
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
# A second scheduler (above) failed and msrun, having waited for every worker first, exits non-zero: the job
# succeeded unless a worker failed. The scheduler.log lines are a fallback for a race the probe missed ("Address
# already in use" at WARNING level, "Failed to init the tcp server" at ERROR). A failed worker shows as msrun's ERROR
# line, or, whatever GLOG_v is, as an ms_vit error line or a Python traceback in its log.
if [ "$status" -ne 0 ] && [ "$node_rank" -gt 0 ]; then
  if [ "$second_scheduler" -eq 1 ] \
    || grep -qE "Address already in use|Failed to init the tcp server" "$logs/scheduler.log" 2>/dev/null; then
    if ! grep -qE "Worker process .* exit with exception|worker exits with exception" "$logs/msrun.out" \
      && ! cat "$logs"/worker_*.log 2>/dev/null | grep -qE "^error: |^Traceback \(most recent call last\)"; then
      status=0
    fi
  fi
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
