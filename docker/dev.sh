#!/usr/bin/env bash
# Run a command in the rlexp image with the repo mounted and headless rendering set up.
#   docker/dev.sh [--cuda] [COMMAND...]      default COMMAND: bash
#   docker/dev.sh python run.py +experiment=ch03_ppo_reach_dense
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
flavor=cpu
if [ "${1:-}" = "--cuda" ]; then
    flavor=cuda
    shift
fi
image="rlexp:${flavor}"

if ! docker image inspect "$image" >/dev/null 2>&1; then
    docker build -f "$repo/docker/Dockerfile.${flavor}" -t "$image" "$repo"
fi

args=(--rm -it
      -v "$repo:/workspace"
      -w /workspace
      -e MUJOCO_GL=egl
      -e PYOPENGL_PLATFORM=egl
      --user "$(id -u):$(id -g)"
      -e HOME=/tmp
      --shm-size=2g)
if [ "$flavor" = cuda ]; then
    args+=(--gpus all -e "NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics")
fi
if [ "$#" -eq 0 ]; then
    set -- bash
fi
exec docker run "${args[@]}" "$image" "$@"
