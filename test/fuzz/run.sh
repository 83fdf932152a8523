#!/bin/sh
# Runs each libFuzzer harness for a fixed time: run.sh BUILD_DIR SECONDS NAME...
# New inputs go to BUILD_DIR/work/NAME (the repository's seeds in
# test/fuzz/corpus/NAME are read only); a crash stops the run, fails it and
# names its reproducer.
set -u
dir=$1 secs=$2
shift 2
here=$(dirname "$0")
failed=
for name in "$@"; do
	work=$dir/work/$name
	art=$dir/artifacts/$name
	log=$dir/$name.log
	mkdir -p "$work" "$art"
	dict=
	[ -f "$here/$name.dict" ] && dict=-dict=$here/$name.dict
	echo "== fuzz-$name for ${secs}s (log: $log)"
	"$dir/fuzz-$name" -max_total_time="$secs" -max_len=8192 -timeout=30 \
		-rss_limit_mb=2048 -print_final_stats=1 $dict \
		-artifact_prefix="$art/" "$work" "$here/corpus/$name" >"$log" 2>&1
	rc=$?
	grep -E '^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb' "$log"
	if [ $rc -ne 0 ]; then
		tail -n 60 "$log"
		repro=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
		echo "fuzz-$name FAILED (exit $rc); reproducer: ${repro:-none written}" >&2
		echo "  replay: $dir/fuzz-$name ${repro:-FILE}" >&2
		failed="$failed $name"
	fi
done
if [ -n "$failed" ]; then
	echo "fuzz: failed:$failed" >&2
	exit 1
fi
