#!/usr/bin/env bash
# Fine-tune a ViT: bash run_finetune.sh [--config FILE] [--key value ...]  (--help lists every key)
# Without --config, --data_dir or --dataset_url: the offline demo (configs/demo.yaml), e.g. `bash run_finetune.sh`.
# With --dataset cifar10 and no --config: the from-scratch recipe configs/vit_cifar10_scratch.yaml.
# With --device_num N > 1: N data-parallel processes launched by msrun; logs in OUTPUT_DIR/msrun_logs/.
set -uo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"
device_num=1
output_dir=""
has_source=0
has_config=0
dataset=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --device_num) device_num="${args[$((i + 1))]:-}" ;;
    --device_num=*) device_num="${args[$i]#*=}" ;;
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
if [ "$dataset" = "cifar10" ] && [ "$has_config" -eq 0 ]; then
  set -- --config configs/vit_cifar10_scratch.yaml "$@"
  has_source=1
fi
if [ "$has_source" -eq 0 ]; then
  set -- --config configs/demo.yaml "$@"
  output_dir="${output_dir:-outputs/demo}"
fi
if ! [[ "$device_num" =~ ^[0-9]+$ ]] || [ "$device_num" -lt 1 ]; then
  echo "error: --device_num must be a positive integer, got '$device_num'" >&2
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

if [ "$device_num" -eq 1 ]; then
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
msrun --worker_num="$device_num" --local_worker_num="$device_num" --master_port="${MASTER_PORT:-8118}" \
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
if [ "$status" -ne 0 ]; then
  errors=$(cat "$logs"/worker_*.log 2>/dev/null | grep -E '^error: ' | sort -u)
  if [ -z "$errors" ]; then
    errors="error: a training process failed: see $logs/ (msrun.out and worker_*.log)"
  fi
  echo "$errors" >&2
  exit "$status"
fi
finish_demo
