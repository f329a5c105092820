#!/bin/sh
# The one install recipe of the image. The Dockerfile RUNs it and tests/test_dockerfile.py runs
# the same RUN lines in a fresh venv, so the image and the test cannot drift apart.
#
#   install.sh VENV SRC        create VENV; install torch, then SRC, both pinned by SRC/requirements.lock
#   install.sh --verify VENV   prove the install works offline: the CLI starts, the packaged model embeds
#
# TORCH_INDEX_ARGS: pip arguments for the torch step only. The Dockerfile passes the CPU wheel index
# so pip never pulls a CUDA build; empty means the machine's own pip configuration.
set -eu

verify() {
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$1/bin/supportbot" --help >/dev/null
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$1/bin/python" -c \
        'from knowledge.embeddings import Embedder; v = Embedder().encode(["ok"]); assert v.shape == (1, 384), v.shape'
}

if [ "${1:-}" = "--verify" ]; then
    verify "$2"
    exit 0
fi

venv=$1
src=$2
python3 -m venv "$venv"
# torch alone first: with the project in the same step, pip would resolve torch from PyPI (CUDA).
# shellcheck disable=SC2086  # TORCH_INDEX_ARGS is a list of pip arguments, split on purpose
"$venv/bin/python" -m pip install --no-input ${TORCH_INDEX_ARGS:-} --constraint "$src/requirements.lock" torch
"$venv/bin/python" -m pip install --no-input --constraint "$src/requirements.lock" "$src"
