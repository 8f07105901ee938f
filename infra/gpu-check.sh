# Usage: bash infra/gpu-check.sh, on the GPU machine. The GPU checks as one run (issue 13:
# the face stage's frames per second on a GPU, decode included, and the share of time it
# waits for frames; the embed stage's crops per second; the tests marked gpu). Run it from
# the repository root after infra/gpu-wheels.sh prepared .whl/ and .media/, e.g. with the
# device tool (the steps' time limits add up to 8 minutes):
#   run(command="bash infra/gpu-check.sh", carry=[".whl", ".media"], timeout_s=540)
# In: CUDA torch; .whl/ (installed into /tmp/site when present); .media/faces/ (else
# $AUTT_SHARED_DATA); $PYTHON (default python3); $DEVICE (default cuda; cpu for a dry run).
# Out: logs in $OUT (or /tmp/gpu-check), printed as they go.
set -uo pipefail
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
py=${PYTHON:-python3}
dev=${DEVICE:-cuda}
if [ -d .whl ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
[ -d .whl ] || echo "warning: no .whl/ here (run infra/gpu-wheels.sh, carry .whl)"
[ -d .media ] && export AUTT_SHARED_DATA=$PWD/.media || echo "warning: no .media/ here"
# every module the steps import, checked at once rather than one failing step at a time
"$py" - <<'PY' | tee "$out/preflight.txt"
import importlib

from pipeline._torchvision_compat import ensure_torchvision_ops

ensure_torchvision_ops()  # where torchvision's own ops cannot load (a CPU torch): as the stages do
names = ("torch", "torchvision", "open_clip", "facenet_pytorch", "decord", "av", "timm",
         "huggingface_hub", "safetensors", "regex", "ftfy", "yaml", "pyarrow", "pandas",
         "fsspec", "PIL", "skimage", "pytest", "pipeline.faces.stage", "pipeline.embed.stage")
missing = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as err:  # noqa: BLE001  (reported, the checks go on)
        missing.append(f"{name} ({type(err).__name__}: {err})")
print("preflight: all imports work" if not missing else "preflight: missing " + "; ".join(missing))
PY
step() {  # name, seconds, command...: run one check, log it, keep going if it fails
    local name=$1 limit=$2; shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
step bench_faces 180 "$py" -m jobs.bench_faces --device "$dev" --threads 4 --reps 3 --demo 4
step bench_faces_noprefetch 90 "$py" -m jobs.bench_faces --device "$dev" --threads 4 \
    --reps 1 --demo 4 --keyframe-every 0 --prefetch off
step bench_embed 90 "$py" -m jobs.bench_embed --model ViT-B-16 --device "$dev" --n 2048
step test_gpu 120 "$py" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
