#!/usr/bin/env bash
# The whole suite, as the README's test command and CI run it. Three pytest sessions, each with a
# basetemp of its own: the default tier (-m "not mlx and not vllm") in the foreground; beside it the
# MLX tier, then the vLLM tier once .venv-vllm is built (tests/vllm_venv.sh, started in the background
# first). The default tier leaves a core idle about a third of the time (its tests wait on servers,
# subprocesses and timeouts), which the other two fill. Their output is shown when they end. Exits 1
# if any tier failed. Arguments go to every pytest call (e.g. -x, or -k NAME: a tier in which it
# selects nothing counts as passed).
set -uo pipefail
cd "$(dirname "$0")/.."
pytest=(python -m pytest -q -p no:cacheprovider "$@")
side_dir=$(mktemp -d "${TMPDIR:-/tmp}/scoreflow-tests.XXXXXX")

bash tests/vllm_venv.sh --background
(
    "${pytest[@]}" --durations=5 -m mlx --basetemp="$side_dir/mlx" > "$side_dir/mlx.log" 2>&1
    echo $? > "$side_dir/mlx.rc"
    { bash tests/vllm_venv.sh && "${pytest[@]}" --durations=5 -m vllm --basetemp="$side_dir/vllm"; } \
        > "$side_dir/vllm.log" 2>&1
    echo $? > "$side_dir/vllm.rc"
) &
side=$!
trap 'pkill -TERM -P "$side" 2>/dev/null; kill "$side" 2>/dev/null' INT TERM

"${pytest[@]}" --durations=15 -m "not mlx and not vllm"
default=$?
echo "(waiting for the MLX and vLLM tiers)"
wait "$side"
for tier in mlx vllm; do
    echo "==== the ${tier} tier (-m ${tier}) ===="
    cat "$side_dir/$tier.log" 2>/dev/null
done
mlx=$(cat "$side_dir/mlx.rc" 2>/dev/null || echo 1)
vllm=$(cat "$side_dir/vllm.rc" 2>/dev/null || echo 1)
echo "tiers: default rc $default, mlx rc $mlx, vllm rc $vllm (5: no test selected)"
for rc in "$default" "$mlx" "$vllm"; do
    [ "$rc" = 0 ] || [ "$rc" = 5 ] || { echo "the MLX and vLLM tiers' folders: $side_dir"; exit 1; }
done
rm -rf "$side_dir"
