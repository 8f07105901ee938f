# Usage: bash infra/gpu-wheels.sh, where pip reaches a registry. Prepares the GPU checks
# (infra/gpu-check.sh) for a machine that has CUDA torch, pyarrow, pandas and fsspec but no
# registry and none of this project's other packages (the device tool's H200 here: Python
# 3.12, x86-64).
# In: the project's virtual environment (the versions it was tested with; $PYTHON, default
# .venv/bin/python) and the shared test media ($AUTT_SHARED_DATA, default ../shared/data).
# Out: .whl/ (the missing packages as wheels, ~52 MB) and .media/faces/ (the benchmark's
# clips, ~3.4 MB), both git-ignored; carry both: run(carry=[".whl", ".media"], ...).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
py=${PYTHON:-.venv/bin/python}
media=${AUTT_SHARED_DATA:-../shared/data}
pins=$("$py" - <<'PY'
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in
               ("open_clip_torch", "facenet-pytorch", "decord", "av", "ftfy", "wcwidth")))
PY
)
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux2010_x86_64 --platform manylinux1_x86_64 -d .whl $pins
mkdir -p .media/faces
for f in single_face.mp4 WolfgangLanger_Pexels.mp4 face_noface.mov no_face.mp4 single_face.jpg; do
    cp "$media/faces/$f" .media/faces/
done
du -sh .whl .media
echo "ready: device run with carry [\".whl\", \".media\"] and command 'bash infra/gpu-check.sh'"
