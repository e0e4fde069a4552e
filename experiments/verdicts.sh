#!/usr/bin/env bash
# The comparisons issue 25 needs, in pieces a person can rerun one at a time:
#
#   experiments/verdicts.sh PART [PART ...]     PART: data base sweep main seeds5 steps400 base2 report publish
#                                                status all
#
#   data      the problems (trapo data make)
#   base      the main base model (trapo base, seed 0)
#   sweep     stage 1 on the main base: every method's learning-rate sweep at seed 0 (two processes)
#   main      test seeds 1 2 3 at the chosen rates, every method (two processes), report in $V/report-main
#   seeds5    trapo grpo luffy sft on seeds 1..5 (seeds 4 and 5 are new runs), report in $V/report-5seeds
#   steps400  trapo grpo luffy at 400 steps (twice the steps), 3 seeds, at the rates chosen in `main`
#   base2     a second base (trapo base --seed 1) with trapo grpo luffy x 3 seeds, at the rates chosen in `main`
#             (BASE2_SWEEP=1: sweep the rates on the second base instead, at seed 0)
#   report    the main comparison's report with the other three comparisons' verdicts beside its claims,
#             in $V/report
#   publish   the same report written over the committed one (docs/results/compare), on purpose only
#   status    how many runs each comparison has finished (reads the cache, trains nothing)
#
# Every piece goes through the run cache (runs are named by a hash of their config, base model and data), so
# a piece that stops (Ctrl-C, `kill`, --time-budget) continues when it is run again; EXTRA="--time-budget 50"
# passes flags to every `trapo compare`. The 400-step runs share the main runs directory: --steps changes
# their hash. Each run and evaluation records the commit of the code that made it (run.json, eval.json) and
# every report says how many each commit produced.
#
# Environment: V (where everything goes; default runs/verdicts), TRAPO (default .venv/bin/trapo),
# PY (default .venv/bin/python), THREADS (default 1), EXTRA (more `trapo compare` flags).
set -euo pipefail
cd "$(dirname "$0")/.."

V=${V:-runs/verdicts}
TRAPO=${TRAPO:-.venv/bin/trapo}
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-1}
EXTRA=${EXTRA:-}
FIXED=(trapo grpo luffy)  # the methods rerun at 400 steps and on the second base

# shellcheck disable=SC2086  # EXTRA is a list of flags
compare() { "$TRAPO" compare --data "$V/data" --threads "$THREADS" --no-progress $EXTRA "$@"; }
main_compare() { compare --base "$V/base" --runs-dir "$V/runs" "$@"; }
base2_compare() { compare --base "$V/base-seed1" --runs-dir "$V/runs-base1" "$@"; }

# `--lr-for METHOD=LR` for each method at the rate the main sweep chose (read from the main report)
chosen_rates() {
    local results="$V/report-main/results.json"
    [ -f "$results" ] || { echo "verdicts: $results is missing: run the 'main' part first" >&2; exit 2; }
    "$PY" -c 'import json, sys
selection = json.load(open(sys.argv[1]))["lr_selection"]
print(" ".join("--lr-for " + m + "=" + selection[m]["chosen"] for m in sys.argv[2:]))' "$results" "$@"
}

# wait for two background jobs; fail (with the first failure's status, e.g. 3: a budget stopped it) if either did
wait_both() {
    local rc=0
    wait "$1" || rc=$?
    wait "$2" || [ "$rc" != 0 ] || rc=$?
    [ "$rc" = 0 ] || exit "$rc"
}

# the other comparisons' verdicts, one column each beside the main claims
beside() {
    echo "--beside 5-seeds=$V/report-5seeds/results.json --beside 400-steps=$V/report-400steps/results.json" \
        "--beside second-base=$V/report-base1/results.json"
}

# one rate per method, no sweep of its own: the first test seed is the "sweep" run, no rate is added
fixed_rates() { echo "--sweep-seed -1 --lr-extensions 0 $(chosen_rates "${FIXED[@]}")"; }

part() {
    case "$1" in
    data) [ -f "$V/data/train.parquet" ] || "$TRAPO" data make --output "$V/data" ;;
    base) "$TRAPO" base --output "$V/base" --threads "$THREADS" ;;
    sweep)
        main_compare --sweep-only --methods trapo trapo-sft grpo &
        local a=$!
        main_compare --sweep-only --methods trapo-fixed luffy sft sft-then-grpo &
        wait_both "$a" $!
        ;;
    main)
        main_compare --methods trapo trapo-sft grpo --out "$V/report-main-part1" &
        local a=$!
        main_compare --methods trapo-fixed luffy sft sft-then-grpo --out "$V/report-main-part2" &
        wait_both "$a" $!
        main_compare --out "$V/report-main"  # reads the cache: every method, seeds 1 2 3
        ;;
    seeds5) main_compare --methods trapo grpo luffy sft --seeds 1 2 3 4 5 --out "$V/report-5seeds" ;;
    steps400)
        local rates
        rates=$(fixed_rates)
        # shellcheck disable=SC2086  # the --lr-for flags split into words on purpose
        main_compare --methods "${FIXED[@]}" --steps 400 --seeds 1 2 3 $rates --out "$V/report-400steps"
        ;;
    base2)
        "$TRAPO" base --seed 1 --output "$V/base-seed1" --threads "$THREADS"
        if [ "${BASE2_SWEEP:-0}" = 1 ]; then
            base2_compare --methods "${FIXED[@]}" --seeds 1 2 3 --out "$V/report-base1"
        else
            local rates
            rates=$(fixed_rates)
            # shellcheck disable=SC2086
            base2_compare --methods "${FIXED[@]}" --seeds 1 2 3 $rates --out "$V/report-base1"
        fi
        ;;
    # shellcheck disable=SC2046  # beside's flags split into words on purpose
    report) main_compare --out "$V/report" $(beside) ;;
    # shellcheck disable=SC2046
    publish) main_compare --publish $(beside) ;;
    status)
        main_compare --status
        main_compare --status --methods trapo grpo luffy sft --seeds 1 2 3 4 5
        if [ ! -f "$V/report-main/results.json" ]; then
            echo "verdicts: no main report yet, so no rates for the 400-step and second-base runs"
            return
        fi
        local rates
        rates=$(fixed_rates)
        # shellcheck disable=SC2086
        main_compare --status --methods "${FIXED[@]}" --steps 400 --seeds 1 2 3 $rates
        if [ -f "$V/base-seed1/config.json" ]; then
            # shellcheck disable=SC2086
            base2_compare --status --methods "${FIXED[@]}" --seeds 1 2 3 $rates
        fi
        ;;
    all) for p in data base sweep main seeds5 steps400 base2 report; do part "$p"; done ;;
    *)
        sed -n '2,24p' "$0" >&2
        exit 2
        ;;
    esac
}

[ $# -gt 0 ] || set -- help
for p in "$@"; do part "$p"; done
