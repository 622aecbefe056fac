#!/usr/bin/env bash
# Runs every cargo-fuzz target for a while (outside CI):
#   scripts/fuzz.sh            600 s per target
#   scripts/fuzz.sh 60         60 s per target
# Needs `cargo install cargo-fuzz`. cargo-fuzz wants nightly -Z flags; RUSTC_BOOTSTRAP=1 lets
# the stable toolchain accept them. New inputs go to target/fuzz-corpus/<target>; the small
# committed seeds in fuzz/corpus/<target> are read but not written. A crash stops the script
# with the reproducer under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
seconds="${1:-600}"
for target in client_message publish_body event_types cloudevents; do
    mkdir -p "../target/fuzz-corpus/$target"
    echo "== fuzzing $target for ${seconds}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "../target/fuzz-corpus/$target" "corpus/$target" \
        -- -max_total_time="$seconds" -print_final_stats=1
done
echo "fuzz: every target ran ${seconds}s without a crash"
